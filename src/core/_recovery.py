"""Answers to what this process did not send: requests and calls forwarded by an earlier process
(before a crash or a restart) or by another instance (a standby that has just taken over).

Their ids are sealed (``_seal``), so the answer itself says where it goes: to the requester from
the address it wrote to, with its original id (a request), or back to the target resource that
started it (a call). One is delivered when its id verifies, it comes from whom the id names, and
its deadline has not passed. Nothing else is known of it, so it is delivered as it comes (no
retry elsewhere), once: its id is remembered until its deadline (``ProxyState.seen``), and a
second copy is dropped. An answer to what an instance forwarded that then stopped cleanly
(``ProxyState.settled``: it answered everything before it ended, the drain's errors included)
is owed to nobody; the callers drop it before it gets here.
"""

from __future__ import annotations

from immutables import Map

from ._link import send
from ._seal import Sealed, wall_ms
from ._stanzas import Stanza
from ._state import Step

__all__ = ["deliver", "owed_to_nobody", "sealed_deadline"]


def sealed_deadline(w: Step, deadline: float) -> int:
    """Monotonic ``deadline`` as the wall-clock milliseconds a sealed id carries."""
    ms = (deadline + w.epoch) * 1000.0
    # wall_ms's clamping, for the clocks (infinite, NaN, before 1970) that need it.
    return int(ms) if 0.0 < ms < 9.2e18 else wall_ms(deadline + w.epoch)


def owed_to_nobody(w: Step, opened: Sealed) -> str | None:
    """Why an answer whose id opened as ``opened``, and that nothing outstanding here awaits, is
    owed to nobody, as the end of its counter's name: ``late`` if this process sealed it (it has
    answered it since: a timeout, the resource's departure, a retry elsewhere; or this is a
    second answer), ``after_stop`` if an instance that stopped cleanly did (it answered
    everything before it ended, the drain's errors included); None if it is another instance's,
    for :func:`deliver`."""
    if opened.instance == w.instance:
        return "late"
    if opened.instance in w.settled:
        return "after_stop"
    return None


def deliver(w: Step, s: Stanza, opened: Sealed, from_: str, to: str, *, measured: int) -> None:
    """Answer ``s``, whose id opened as ``opened``, goes ``to`` ``from_`` with the original id,
    unless its deadline has passed or it has been delivered already (dropped and counted)."""
    if opened.deadline <= wall_ms(w.now + w.epoch):
        w.count("dropped.reply_expired")
        return
    ident = s.id or ""
    seen = w.seen
    if ident in seen:
        w.count("dropped.reply_duplicate")
        return
    if len(seen) >= w.config.max_outstanding:
        # Bounded like the requests themselves: forget what has expired (a scan, only at the
        # cap); if it is still full, this answer cannot be remembered, so it is not delivered
        # (twice would be worse than not at all).
        now = w.now
        seen = Map({key: until for key, until in seen.items() if until > now})
        w.seen = seen
        if len(seen) >= w.config.max_outstanding:
            w.count("dropped.recovered_memory")
            return
    w.seen = seen.set(ident, opened.deadline / 1000.0 - w.epoch)
    w.count("answered.recovered")
    answer = Stanza("iq", s.type, opened.original, from_, to, s.payload, s.error, None, s.extra)
    send(w, answer, measured)
