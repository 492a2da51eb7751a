"""Time: what falls due (:func:`expire`), and when the machine next needs to be woken
(:func:`next_deadline`).

Four kinds of deadline: an entry of the queue (``_queue``: a request's timeout, a call's, a
message route's end), the end of the resync grace (``sync_grace`` after a connect: parked
requests are refused, an unanswered subscription is reported), the end of a drain (``stop_at``),
and the rate limit's sweep of stale entries (``sweep_at``).
"""

from __future__ import annotations

from ._calls import shut_down_call, time_out_call
from ._messages import forget_route
from ._policy import sweep
from ._queue import entries, first
from ._requests import refuse_parked, shut_down, time_out
from ._state import QueueEntry, Step, Subscription

_INF = float("inf")

__all__ = ["expire", "next_deadline"]


def expire(w: Step) -> None:
    """Answer or drop everything whose deadline is now or past, in deadline order."""
    now = w.now
    while (entry := first(w)) is not None and _deadline(w, entry) <= now:
        kind, jid, ident = entry
        if kind == "in":
            time_out(w, (jid, ident))
        elif kind == "call":
            time_out_call(w, (jid, ident))
        else:
            forget_route(w, (jid, ident))
    session = w.session
    cfg = w.config
    if session.parked and session.sync_until <= now:
        w.log(
            "warning",
            "resync.no_resource",
            f"no resource of {cfg.target} came online within {cfg.sync_grace:g} s of "
            f"connecting; refusing {len(session.parked)} waiting request(s)",
        )
        refuse_parked(w)
    session = w.session
    if session.subscription is Subscription.REQUESTED and session.sync_until <= now:
        w.session = session._replace(subscription=Subscription.UNANSWERED)
        w.log(
            "warning",
            "subscription.pending",
            f"{cfg.target} has not approved the presence subscription from "
            f"{cfg.proxy_domain} after {cfg.sync_grace:g} s: until it does, requests get "
            "service-unavailable (README: approving the subscription)",
        )
    session = w.session
    if session.stop_at is not None and not session.stopped and session.stop_at <= now:
        # The drain is over: everything still owed an answer gets `service-unavailable`.
        for kind, jid, ident in entries(w):
            if kind == "in":
                shut_down(w, (jid, ident))
            elif kind == "call":
                shut_down_call(w, (jid, ident))
    if w.sweep_at <= now:
        sweep(w)


def next_deadline(w: Step) -> float | None:
    """When the machine next needs :class:`~client_proxy.core.TimePassed` (None: never): the
    earliest of the first queue entry's deadline, the end of the resync grace while something
    waits for it (requests parked, or the subscription not answered yet), the end of a drain
    still to come, and the rate limit's next sweep. (``step`` skips this when none of them can
    have moved since the last step.)"""
    entry = first(w)
    deadline = None if entry is None else _deadline(w, entry)
    session = w.session
    if session.parked or session.subscription is Subscription.REQUESTED:
        sync_until = session.sync_until
        if deadline is None or sync_until < deadline:
            deadline = sync_until
    stop_at = session.stop_at
    if stop_at is not None and not session.stopped and (deadline is None or stop_at < deadline):
        deadline = stop_at
    sweep_at = w.sweep_at
    if sweep_at < float("inf") and (deadline is None or sweep_at < deadline):
        deadline = sweep_at
    return deadline


def _deadline(w: Step, entry: QueueEntry) -> float:
    kind, jid, ident = entry
    if kind == "in":
        return w.requests[(jid, ident)].deadline
    if kind == "call":
        return w.calls[(jid, ident)].deadline
    return w.routes[(jid, ident)].deadline
