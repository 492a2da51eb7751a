"""The component stream's life: up (resync with the target), down (hold what is sent), and the
stop (drain, :class:`~client_proxy.core.Stopped`, the end of stream, and the answers that come
due after it).

Server facts this relies on (DESIGN.md, "Server facts measured here"): a `probe` sent while the
`subscribe` is pending makes Prosody drop the pending subscription, so :func:`connected` sends
`subscribe` only and the probe waits for `subscribed` (``_presence``); a repeated `subscribe` is
harmless on both servers and doubles as the resync after a reconnect.

The end of a stop. XEP-0114 gives a component no way to make the server stop routing to it but
closing the stream, so a request the server routed just before it read the proxy's end of stream
still arrives after it (:class:`~client_proxy.core.EndOfStreamSent`). The core answers it as
usual; the answer cannot go out on a stream already ended, so it is held, and once the stream is
gone the core asks the transport for a fresh one (:class:`~client_proxy.core.Reconnect`) to
deliver what it holds, at most :data:`MAX_FLUSHES` times; what is still held after that is
logged by id (``stop.lost``) and dropped.
"""

from __future__ import annotations

from ._outputs import Reconnect, SendStanza, Stopped
from ._stanzas import Stanza, footprint
from ._state import Link, Step, Subscription, build

__all__ = [
    "MAX_FLUSHES",
    "connected",
    "disconnected",
    "end_of_stream",
    "late_arrival",
    "send",
    "stop",
    "stopped",
]

#: How many fresh streams a stopped proxy asks for to deliver what it holds; each is short, so
#: the chance that yet another request slips in behind it keeps shrinking.
MAX_FLUSHES = 3

_UP = Link.UP


def send(w: Step, stanza: Stanza, measured: int = 0, until: float | None = None) -> None:
    """Send ``stanza`` on the component stream now, or, while the stream cannot carry it (down,
    or ended by the proxy), hold it until a stream is up again, counting its bytes (``measured``
    for what came from the network, see ``_stanzas.footprint``) against the budget. ``until``:
    see :class:`~client_proxy.core.SendStanza` (a request's deadline)."""
    session = w.session
    if session.link is _UP:
        w.out.append(build(SendStanza, (stanza, until)))
    elif len(session.held) < 2 * w.config.max_outstanding:
        # Requests and calls are each bounded by max_outstanding, and each gets one answer.
        size = footprint(stanza, measured)
        w.session = session._replace(
            held=(*session.held, stanza), held_bytes=session.held_bytes + size
        )
        w.bytes_held += size
    else:
        # Only a transport that keeps delivering stanzas while the stream cannot carry the
        # answers gets here; the state must stay bounded all the same.
        w.count("dropped.held_overflow")


def connected(w: Step) -> None:
    """The stream is up (XEP-0114 §3): send what was held, forget what was known of the target's
    resources (it may be stale), and ask for its presence again. Requests already sent keep their
    resource, so its reply is still accepted. After a stop, a stream is only for what was held:
    nothing is asked of the target."""
    cfg = w.config
    session = w.session
    held = session.held
    w.bytes_held -= session.held_bytes
    if session.stopped:
        w.session = session._replace(link=Link.UP, held=(), held_bytes=0)
        for stanza in held:
            send(w, stanza)
        w.log("info", "stop.flushed", f"sent {len(held)} answer(s) held after the stop")
        return
    w.session = session._replace(
        link=Link.UP,
        held=(),
        held_bytes=0,
        resources=(),
        subscription=Subscription.REQUESTED,
        sync_until=w.now + cfg.sync_grace,
        synced=False,
    )
    for stanza in held:
        send(w, stanza)
    if held:
        w.log("info", "held.sent", f"sent {len(held)} answer(s) held while offline")
    send(w, Stanza("presence", type="subscribe", from_=cfg.proxy_domain, to=cfg.target))
    w.log(
        "info",
        "connection.up",
        f"connected as {cfg.proxy_domain}; asking {cfg.target} for its presence",
    )


def end_of_stream(w: Step) -> None:
    """The transport has written the proxy's end of stream (after :class:`Stopped`): from now on
    what the core sends is held (:func:`send`), though stanzas may still arrive until the server
    closes its side."""
    session = w.session
    if session.link is Link.UP:
        w.session = session._replace(link=Link.CLOSING)


def disconnected(w: Step) -> None:
    """The stream is gone: requests stay outstanding until their deadlines (their resources may
    still answer after the reconnect); answers due meanwhile are held (:func:`send`). After a
    stop, what is held asks for a fresh stream (:func:`_flush`)."""
    session = w.session
    if session.link is not Link.DOWN:
        w.session = session._replace(link=Link.DOWN, subscription=Subscription.NONE)
        if session.stop_at is not None:
            w.log("info", "connection.closed", "disconnected")
        else:
            w.log(
                "warning",
                "connection.lost",
                f"connection lost with {len(w.requests)} request(s) outstanding; "
                "they stay until their deadlines",
            )
    if w.session.stopped:
        _flush(w)


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


def stopped(w: Step) -> None:
    """A stop has nothing left to answer: :class:`Stopped`, and the transport ends the stream.
    If answers are held for want of a stream, they ask for one (:func:`_flush`)."""
    w.session = w.session._replace(stopped=True)
    w.out.append(Stopped())
    if w.session.link is Link.DOWN:
        _flush(w)


def late_arrival(w: Step, s: Stanza) -> None:
    """A stanza that arrived after the proxy's end of stream: counted, and a request named in the
    log (its answer is held, :func:`send`)."""
    w.count("stop.late")
    if s.kind == "iq" and s.type in ("get", "set"):
        w.log(
            "info",
            "stop.late",
            f"iq {s.type} id={s.id} from {s.from_} arrived after our end of stream; its answer "
            "goes out on a fresh connection",
        )


def _flush(w: Step) -> None:
    """Ask for a fresh stream for what is held, or give it up after :data:`MAX_FLUSHES`."""
    session = w.session
    held = session.held
    if not held:
        return
    if session.flushes < MAX_FLUSHES:
        w.session = session._replace(flushes=session.flushes + 1)
        w.out.append(Reconnect())
        w.log(
            "info", "stop.flush", f"reconnecting to send {len(held)} answer(s) held after the stop"
        )
        return
    w.session = session._replace(held=(), held_bytes=0)
    w.bytes_held -= session.held_bytes
    for _ in held:
        w.count("stop.lost")
    w.log(
        "warning",
        "stop.lost",
        f"{len(held)} answer(s) held after the stop could not be sent: "
        + " ".join(f"{s.kind} id={s.id} to {s.to}" for s in held),
    )
