"""A new configuration while the proxy runs (:class:`~client_proxy.core.ConfigChanged`): what
it changes at once, and what it leaves as it was.

Policy takes effect at once: routing, ``resource_pattern`` (each online resource's eligibility
is decided again), allow and deny, the rate limit, the failure threshold and cooldown, the caps,
``retry_get``/``retry_set``, ``outbound_iq``, ``messages``. A longer ``request_timeout`` is for
new requests; a shorter one also holds for those outstanding, so that nobody waits longer than
it: one that has already waited that long is answered with `remote-server-timeout` at once.
(Deadlines stay in acceptance order either way, which the deadline queue relies on: the earlier
of the old deadline and the acceptance time plus the new timeout keeps the order of both, and
so does bringing those already past to now.)
Requests keep their resource and their place in the queue; lowered caps refuse new requests
until the outstanding ones drain below them. A new
``proxy_domain`` is the transport's to reconnect under; answers keep the address each requester
wrote to. The target cannot change while the proxy runs (what is outstanding was sent to it):
such a config is refused, logged, and the old one stays.
A new ``seal_key`` applies at once: an answer to a request outstanding here is matched by the
whole id it was forwarded with, which needs no key, so only answers to other instances'
forwards (and the counting of late ones) use it. (The daemon keeps the key it started with:
every instance of a component must seal with the same.)
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any, TypeVar, cast

from immutables import Map

from ._config import ProxyConfig
from ._state import Call, MessageRoute, Outstanding, Step, TargetResource

__all__ = ["reconfigure"]

_K = TypeVar("_K", bound=Hashable)


def reconfigure(w: Step, config: ProxyConfig) -> None:
    """Apply ``config`` from now on (see the module's docstring)."""
    old = w.config
    if config.target != old.target:
        w.log(
            "error",
            "config.rejected",
            f"target cannot change from {old.target} to {config.target} while running: "
            "restart client-proxy for that; keeping the current configuration",
        )
        return
    w.config = config
    timeout = config.request_timeout
    if timeout < old.request_timeout:
        w.requests = _shortened(w.requests, timeout, w.now)
        w.calls = _shortened(w.calls, timeout, w.now)
        w.routes = _shortened(w.routes, timeout, w.now)
    if config.resource_pattern != old.resource_pattern:
        pattern = config.resource_pattern
        w.session = w.session._replace(
            resources=tuple(
                TargetResource(
                    r.name,
                    r.priority,
                    pattern is None or re.fullmatch(pattern, r.name) is not None,
                    r.failures,
                    r.cooling_until,
                )
                for r in w.session.resources
            )
        )
    if config.routing != old.routing:
        # `least-outstanding` keeps a count of requests per resource, and nothing else does.
        load: dict[str, int] = {}
        if config.routing == "least-outstanding":
            for o in w.requests.values():
                if o.resource is not None:
                    load[o.resource] = load.get(o.resource, 0) + 1
        w.load = Map(load)
    if config.rate_limit <= 0 and w.rates:
        w.rates = Map()
    if config.rate_limit <= 0:
        w.sweep_at = float("inf")


_Waiting = TypeVar("_Waiting", Outstanding, Call, MessageRoute)


def _shortened(table: Map[_K, _Waiting], timeout: float, now: float) -> Map[_K, _Waiting]:
    """``table`` with every deadline cut to its acceptance time plus ``timeout`` if earlier, and
    to ``now`` if that is past (then it is due in this very step)."""
    # The cast: mypyc's checker types _replace on a constrained TypeVar as the union of the
    # constraints (mypy itself does not).
    changes = {
        key: cast(Any, entry._replace(deadline=max(entry.since + timeout, now)))
        for key, entry in table.items()
        if entry.since + timeout < entry.deadline
    }
    return table.update(changes) if changes else table
