"""Admission: who may use the service, how fast, and how much at once (allow/deny lists, a
per-requester rate limit, the caps on requests outstanding).

The rate limit is GCRA (the generic cell rate algorithm, ITU-T I.371), the token bucket written
with one number per requester: its *theoretical arrival time* (TAT). A request at ``now`` is
allowed if ``TAT - now <= (burst - 1) * interval``, and then ``TAT = max(TAT, now) + interval``.
A requester whose TAT has passed has a full bucket, which is the same as having no entry, so
entries can be swept away once stale: the state holds only requesters active in the last
``burst * interval`` seconds.
"""

from __future__ import annotations

from immutables import Map

from ._errors import (
    FORBIDDEN,
    SHUTTING_DOWN,
    TOO_FAST,
    TOO_MANY,
    TOO_MANY_FROM_YOU,
    TOO_MUCH,
    TOO_MUCH_FROM_YOU,
    refuse,
)
from ._jid import bare, domain_of, resource_of
from ._stanzas import Stanza
from ._state import Step

_NOTHING = (0, 0)

__all__ = ["admit", "listed", "rate_check", "sweep", "sweep_period", "within_caps"]


def listed(requester: str, entries: tuple[str, ...]) -> bool:
    """True if ``requester`` matches one of ``entries``: a domain (`example.org`) matches every
    address at it, a bare JID (`user@example.org`) every resource of it, a full JID itself."""
    if not entries:
        return False
    b = bare(requester)
    d = domain_of(requester)
    for entry in entries:
        if resource_of(entry) is not None:
            if entry == requester:
                return True
        elif "@" in entry:
            if entry == b:
                return True
        elif entry == d:
            return True
    return False


def rate_check(tat: float | None, now: float, rate: float, burst: int) -> float | None:
    """The requester's new TAT if a request at ``now`` is within its rate, else None."""
    interval = 1.0 / rate
    start = now if tat is None or tat < now else tat
    # The tolerance absorbs the rounding of adding intervals to large times (found by the
    # property test: at rate 1.25, 8.8 - 8.0 exceeds 0.8 by one ulp): 1e-9 * max(1, |now|),
    # spelled without the two builtin calls (this runs for every request).
    scale = now if now > 1.0 else -now if now < -1.0 else 1.0
    if start - now > (burst - 1) * interval + 1e-9 * scale:
        return None
    return start + interval


def sweep_period(rate: float, burst: int) -> float:
    """How often stale entries are swept: once a bucket can have filled up again, at least 1 s."""
    return max(1.0, burst / rate)


def admit(w: Step, s: Stanza, requester: str, account: str) -> bool:
    """The checks every request and message from a user passes first, in this order: the allow
    and deny lists (`forbidden`), shutting down (`service-unavailable`), the rate of the
    requester's ``account`` (its bare JID: all its resources share one rate; `policy-violation`).
    Refuses ``s`` and returns False if one fails."""
    cfg = w.config
    if (cfg.deny and listed(requester, cfg.deny)) or (
        cfg.allow and not listed(requester, cfg.allow)
    ):
        refuse(w, s, FORBIDDEN, "refused.forbidden")
        return False
    if w.session.stop_at is not None:
        refuse(w, s, SHUTTING_DOWN, "refused.shutting_down")
        return False
    rate = cfg.rate_limit
    if rate > 0:
        now = w.now
        tat = rate_check(w.rates.get(account), now, rate, cfg.rate_burst)
        if tat is None:
            refuse(w, s, TOO_FAST, "refused.rate_limit")
            return False
        w.rates = w.rates.set(account, tat)
        if w.sweep_at == float("inf"):
            w.sweep_at = now + sweep_period(rate, cfg.rate_burst)
    return True


def within_caps(w: Step, s: Stanza, account: str, size: int) -> tuple[int, int] | None:
    """The caps on what is held for requesters, in requests and in bytes (``max_outstanding``
    and ``max_outstanding_bytes`` over all, ``max_per_requester`` and
    ``max_bytes_per_requester`` per ``account``, the requester's bare JID: its resources share
    one allowance, so that cycling through fresh resource names gains nothing;
    `resource-constraint`, wait): the account's (requests, bytes) so far if one more of
    ``size`` bytes fits, else None (``s`` has been refused)."""
    cfg = w.config
    if len(w.requests) >= cfg.max_outstanding:
        refuse(w, s, TOO_MANY, "refused.limit_total")
        return None
    if w.bytes_held + size > cfg.max_outstanding_bytes:
        refuse(w, s, TOO_MUCH, "refused.limit_bytes")
        return None
    mine = w.per_requester.get(account, _NOTHING)
    if mine[0] >= cfg.max_per_requester:
        refuse(w, s, TOO_MANY_FROM_YOU, "refused.limit_requester")
        return None
    if mine[1] + size > cfg.max_bytes_per_requester:
        refuse(w, s, TOO_MUCH_FROM_YOU, "refused.limit_requester_bytes")
        return None
    return mine


def sweep(w: Step) -> None:
    """Forget the requesters whose bucket is full again (they need no entry), at ``sweep_at``."""
    now = w.now
    w.rates = Map({k: tat for k, tat in w.rates.items() if tat > now})
    w.sweep_at = (
        now + sweep_period(w.config.rate_limit, w.config.rate_burst) if w.rates else float("inf")
    )
