"""Who may use the service, and how fast: allow/deny lists and a per-requester rate limit.

The rate limit is GCRA (the generic cell rate algorithm, ITU-T I.371), the token bucket written
with one number per requester: its *theoretical arrival time* (TAT). A request at ``now`` is
allowed if ``TAT - now <= (burst - 1) * interval``, and then ``TAT = max(TAT, now) + interval``.
A requester whose TAT has passed has a full bucket, which is the same as having no entry, so
entries can be swept away once stale: the state holds only requesters active in the last
``burst * interval`` seconds.
"""

from __future__ import annotations

from immutables import Map

from ._config import ProxyConfig
from ._jid import bare, domain_of, resource_of

__all__ = ["charge", "listed", "rate_check", "sweep_period"]


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
    # property test: at rate 1.25, 8.8 - 8.0 exceeds 0.8 by one ulp).
    if start - now > (burst - 1) * interval + 1e-9 * max(1.0, abs(now)):
        return None
    return start + interval


def sweep_period(rate: float, burst: int) -> float:
    """How often stale entries are swept: once a bucket can have filled up again, at least 1 s."""
    return max(1.0, burst / rate)


def charge(
    config: ProxyConfig, rates: Map[str, float], sweep_at: float, requester: str, now: float
) -> tuple[Map[str, float], float] | None:
    """A request from ``requester`` at ``now`` against the rate limit (``config.rate_limit`` >
    0), given the TATs and the next sweep time: their new values if it is within its rate,
    else None (refuse it)."""
    rate = config.rate_limit
    burst = config.rate_burst
    tat = rate_check(rates.get(requester), now, rate, burst)
    if tat is None:
        return None
    if sweep_at == float("inf"):
        sweep_at = now + sweep_period(rate, burst)
    return rates.set(requester, tat), sweep_at
