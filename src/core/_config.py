"""The proxy's settings, checked once when built (a bad value raises ValueError naming it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._jid import bare, resource_of

__all__ = ["ProxyConfig"]


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
        for name in ("max_outstanding", "max_per_requester"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1")
