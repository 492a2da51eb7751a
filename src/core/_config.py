"""The proxy's settings, checked once when built (a bad value raises ValueError naming it)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ._jid import bare, resource_of

__all__ = ["ROUTING_STRATEGIES", "ProxyConfig"]

#: How a request picks among the eligible online resources (see ``_routing``).
ROUTING_STRATEGIES = frozenset({"random", "round-robin", "least-outstanding", "priority", "sticky"})


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What the core needs to know; the shell maps its TOML keys onto these fields.

    Addresses must already be normalised (the shell applies the JID profiles): the core compares
    them exactly with what the server stamps.
    """

    #: The component's domain, as configured on the server (`proxy.example.org`).
    proxy_domain: str
    #: The implementing client's bare JID (`svc@example.org`).
    target: str
    #: Seconds a request may stay unanswered before the requester gets `remote-server-timeout`.
    request_timeout: float = 30.0
    #: Re-send a `get` to another resource when its resource goes away (safe: gets are idempotent).
    retry_get: bool = True
    #: Re-send a `set` likewise (off by default: the first resource may have acted on it).
    retry_set: bool = False
    #: Most requests outstanding at once, over all requesters.
    max_outstanding: int = 10_000
    #: Most requests outstanding at once from one requester (full JID).
    max_per_requester: int = 1_000
    #: After (re)connecting, how long a request that finds no resource online waits for the
    #: resync (subscribe, then probe) to report one, before `service-unavailable`.
    sync_grace: float = 5.0
    #: The routing strategy, one of :data:`ROUTING_STRATEGIES`; `random` is mod_client_proxy's.
    routing: str = "random"
    #: Only resources whose name matches this regular expression (whole name) take traffic.
    resource_pattern: str | None = None
    #: After this many `feature-not-implemented` or `service-unavailable` errors in a row, a
    #: resource is taken out of rotation for ``failure_cooldown`` seconds (0: never).
    failure_threshold: int = 3
    failure_cooldown: float = 30.0
    #: Requesters (JIDs: `domain`, `user@domain` or a full JID) refused with `forbidden`.
    deny: tuple[str, ...] = ()
    #: If not empty, only these requesters may use the service (``deny`` still wins).
    allow: tuple[str, ...] = ()
    #: Requests (IQs and messages) per second per requester, with bursts of up to
    #: ``rate_burst``; beyond it `policy-violation` (wait). 0 turns the limit off.
    rate_limit: float = 100.0
    rate_burst: int = 200
    #: Let the implementing client start IQs towards users (`proxy-domain/<user JID>`).
    outbound_iq: bool = True
    #: Proxy messages both ways.
    messages: bool = True

    def __post_init__(self) -> None:
        for name in ("proxy_domain", "target"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty JID")
        if "@" in self.proxy_domain or resource_of(self.proxy_domain) is not None:
            raise ValueError(f"proxy_domain {self.proxy_domain!r} must be a bare domain")
        if "@" not in self.target or bare(self.target) != self.target:
            raise ValueError(f"target {self.target!r} must be a bare JID (user@domain)")
        for name in ("request_timeout", "sync_grace"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be > 0")
        for name in ("max_outstanding", "max_per_requester", "rate_burst"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1")
        if self.routing not in ROUTING_STRATEGIES:
            raise ValueError(
                f"routing {self.routing!r} is not one of {', '.join(sorted(ROUTING_STRATEGIES))}"
            )
        if self.resource_pattern is not None:
            try:
                re.compile(self.resource_pattern)
            except re.error as exc:
                raise ValueError(
                    f"resource_pattern {self.resource_pattern!r} is not a regular expression: {exc}"
                ) from None
        if (
            not isinstance(self.failure_threshold, int)
            or isinstance(self.failure_threshold, bool)
            or self.failure_threshold < 0
        ):
            raise ValueError("failure_threshold must be an integer >= 0")
        for name in ("failure_cooldown", "rate_limit"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        for name in ("deny", "allow"):
            for entry in getattr(self, name):
                if not isinstance(entry, str) or not entry or entry != entry.strip():
                    raise ValueError(f"{name} entries must be JIDs or domains, not {entry!r}")
