"""The proxy's settings, checked once when built (a bad value raises ValueError naming it)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ._jid import bare, domain_of, resource_of

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
    #: Most requests outstanding at once from one requester: an account (bare JID), all its
    #: resources together, so that fresh resource names do not make a fresh allowance.
    max_per_requester: int = 1_000
    #: Most bytes held on behalf of requesters at once: outstanding and parked requests (their
    #: payloads, kept while they may be sent again), outbound calls, answers held while the
    #: link is down. 64 MiB: a few times what 10,000 ordinary requests of a few hundred bytes
    #: hold, so the count limit bites first in ordinary traffic, while 100 KB payloads (Prosody
    #: routes stanzas of up to 256 KiB from clients by default) can hold no more than that.
    max_outstanding_bytes: int = 64 * 1024 * 1024
    #: Most bytes held for one requester (an account, as above): an eighth of the budget, so
    #: that one user
    #: cannot take it all.
    max_bytes_per_requester: int = 8 * 1024 * 1024
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
    #: The key that seals the ids of forwarded requests and calls (``_seal``: HMAC-SHA256). Every
    #: instance serving one component must have the same, so that any of them can deliver an
    #: answer to what another forwarded. The daemon derives it from the component secret (or
    #: ``seal_key_file``); an embedder should pass 32 random bytes shared by its instances. The
    #: empty default seals with a key anybody knows: ids stay unique and checked, not secret.
    seal_key: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        # One source of truth for what a valid setting is: the shell's config loader builds this
        # class from the TOML file and reports its ValueError as the one-line config error, so
        # each message names the key and the value it got.
        for name in ("proxy_domain", "target"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty JID, not {value!r}")
        if "@" in self.proxy_domain or resource_of(self.proxy_domain) is not None:
            raise ValueError(f"proxy_domain {self.proxy_domain!r} must be a bare domain")
        if "@" not in self.target or bare(self.target) != self.target:
            raise ValueError(f"target {self.target!r} must be a bare JID (user@domain)")
        if domain_of(self.target) == self.proxy_domain:
            # The component's domain is the proxy's own: a target there would be routed back to
            # the proxy itself (XEP-0114 §1: the component owns every address at its domain).
            raise ValueError(
                f"target {self.target!r} must not be an address at the component itself"
            )
        _seconds(self, "request_timeout", positive=True)
        _seconds(self, "sync_grace")
        _seconds(self, "failure_cooldown")
        _seconds(self, "rate_limit", what="a number of requests per second")
        for name in (
            "max_outstanding",
            "max_per_requester",
            "max_outstanding_bytes",
            "max_bytes_per_requester",
            "rate_burst",
        ):
            _integer(self, name, least=1)
        _integer(self, "failure_threshold", least=0)
        for name in ("retry_get", "retry_set", "outbound_iq", "messages"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, not {value!r}")
        if self.routing not in ROUTING_STRATEGIES:
            raise ValueError(
                f"routing {self.routing!r} is not one of {', '.join(sorted(ROUTING_STRATEGIES))}"
            )
        pattern = self.resource_pattern
        if pattern is not None:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"resource_pattern must be a regular expression, not {pattern!r}")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"resource_pattern {pattern!r} is not a regular expression: {exc}"
                ) from None
        if not isinstance(self.seal_key, bytes):
            raise ValueError(f"seal_key must be bytes, not {type(self.seal_key).__name__}")
        for name in ("deny", "allow"):
            entries = getattr(self, name)
            if not isinstance(entries, tuple):
                raise ValueError(f"{name} must be a list of JIDs or domains, not {entries!r}")
            for entry in entries:
                if not isinstance(entry, str) or not entry or entry != entry.strip():
                    raise ValueError(f"{name} entries must be JIDs or domains, not {entry!r}")


def _seconds(
    config: ProxyConfig, name: str, positive: bool = False, what: str = "a number of seconds"
) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be {what}, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, not {value!r}")


def _integer(config: ProxyConfig, name: str, least: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")
