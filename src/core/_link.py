"""The component stream's life: up (resync with the target), down (hold the answers), and the
stop (drain, then :class:`~client_proxy.core.Stopped`).

Server facts this relies on (DESIGN.md, "Server facts measured here"): a `probe` sent while the
`subscribe` is pending makes Prosody drop the pending subscription, so :func:`connected` sends
`subscribe` only and the probe waits for `subscribed` (``_presence``); a repeated `subscribe` is
harmless on both servers and doubles as the resync after a reconnect.
"""

from __future__ import annotations

from ._outputs import SendStanza
from ._stanzas import Stanza
from ._state import Link, Step, Subscription, build

__all__ = ["connected", "deliver", "disconnected", "stop"]


def deliver(w: Step, answer: Stanza) -> None:
    """Send an answer owed to somebody now, or hold it until the link is back."""
    session = w.session
    if session.link is Link.UP:
        w.out.append(build(SendStanza, (answer,)))
    elif len(session.held) < 2 * w.config.max_outstanding:
        # Requests and calls are each bounded by max_outstanding, and each gets one answer.
        w.session = session._replace(held=(*session.held, answer))
    else:
        # Only a transport that keeps delivering requests while it says the link is down gets
        # here; the state must stay bounded all the same.
        w.count("dropped.held_overflow")


def connected(w: Step) -> None:
    """The stream is up (XEP-0114 §3): send what was held, forget what was known of the target's
    resources (it may be stale), and ask for its presence again. Requests already sent keep their
    resource, so its reply is still accepted."""
    cfg = w.config
    held = w.session.held
    for stanza in held:
        w.send(stanza)
    if held:
        w.log("info", "held.sent", f"sent {len(held)} answer(s) held while offline")
    w.session = w.session._replace(
        link=Link.UP,
        held=(),
        resources=(),
        subscription=Subscription.REQUESTED,
        sync_until=w.now + cfg.sync_grace,
        synced=False,
    )
    w.send(Stanza("presence", type="subscribe", from_=cfg.proxy_domain, to=cfg.target))
    w.log(
        "info",
        "connection.up",
        f"connected as {cfg.proxy_domain}; asking {cfg.target} for its presence",
    )


def disconnected(w: Step) -> None:
    """The stream is gone: requests stay outstanding until their deadlines (their resources may
    still answer after the reconnect); answers due meanwhile are held (:func:`deliver`)."""
    session = w.session
    if session.link is Link.DOWN:
        return
    w.session = session._replace(link=Link.DOWN, subscription=Subscription.NONE)
    if session.stop_at is not None:
        w.log("info", "connection.closed", "disconnected")
        return
    w.log(
        "warning",
        "connection.lost",
        f"connection lost with {len(w.requests)} request(s) outstanding; "
        "they stay until their deadlines",
    )


def stop(w: Step, drain: float) -> None:
    """Refuse new requests from now on, and end the drain ``drain`` seconds from now (when what
    is still outstanding gets `service-unavailable`, ``_deadlines``)."""
    if w.session.stop_at is not None:
        return
    drain = drain if drain > 0 else 0.0  # also turns NaN into 0
    # An endless drain never ends, even before the first time seen (-inf + inf would be NaN,
    # and a NaN stop_at would never compare as due).
    stop_at = w.now + drain if drain < float("inf") else drain
    w.session = w.session._replace(stop_at=stop_at)
    w.log(
        "info",
        "stop.requested",
        f"stopping: refusing new requests, {len(w.requests)} outstanding, "
        f"waiting up to {drain:g} s for their replies",
    )
