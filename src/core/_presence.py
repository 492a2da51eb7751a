"""The target's presence: the subscription's life cycle, which resources are online, and what
happens to the requests a resource held when it goes (see ``_machine`` for the server facts this
relies on)."""

from __future__ import annotations

import re

from ._inbound import _Inbound
from ._jid import resource_of
from ._outputs import LogLevel
from ._stanzas import Stanza
from ._state import MAX_RESOURCES, Subscription, TargetResource, queue_key
from ._step_base import _NO_RESOURCE, _RESOURCE_GONE

__all__: list[str] = []


class _Presence(_Inbound):
    __slots__ = ()

    def target_presence(self, s: Stanza, sender: str) -> None:
        cfg = self.config
        resource = resource_of(sender)
        kind = s.type
        if kind is None:
            if not resource:
                self.count("ignored.presence_bare")
                return
            self.resource_available(resource, _priority(s.priority))
            self.synced = True
        elif kind == "unavailable":
            if resource:
                self.resource_left(resource)
            else:
                # RFC 6121 §4.3.2: a bare unavailable means no resource is available.
                self.all_left("target.offline", f"{cfg.target} has no resource online")
                self.end_sync()
        elif kind == "error":
            self.all_left(
                "target.presence_error",
                f"presence error from {cfg.target}: treating every resource as offline",
                level="warning",
            )
            self.end_sync()
        elif kind == "subscribed":
            if self.subscription is Subscription.APPROVED:
                self.count("ignored.subscribed_again")
                return
            self.subscription = Subscription.APPROVED
            self.send(Stanza("presence", type="probe", from_=cfg.proxy_domain, to=cfg.target))
            self.log(
                "info",
                "subscription.approved",
                f"{cfg.target} approved the subscription; probing its resources",
            )
        elif kind in ("unsubscribed", "unsubscribe"):
            self.subscription = Subscription.NONE
            self.all_left(
                "subscription.revoked",
                f"{cfg.target} sent {kind}: the proxy no longer sees its presence and cannot "
                f"route requests; approve the subscription from {cfg.proxy_domain} on the "
                "target account, then restart or reconnect client-proxy",
                level="error",
            )
            self.end_sync()
        else:
            self.count("ignored.presence_from_target")

    def end_sync(self) -> None:
        """The target's presence has told where it stands since the (re)connect: requests that
        find no resource from now on are refused at once, and so are those parked."""
        self.synced = True
        if self.parked:
            for key in self.parked:
                self.count("refused.no_resource")
                self.answer_error(key, self.requests[key], _NO_RESOURCE)

    def resource_available(self, name: str, priority: int) -> None:
        cfg = self.config
        resources = self.resources
        for i, r in enumerate(resources):
            if r.name == name:
                # New presence also brings a resource back from a cool-down.
                if r.cooling_until > self.now:
                    self.log("info", "resource.back", f"{cfg.target}/{name} is back in rotation")
                fresh = TargetResource(name, priority, r.eligible)
                if fresh != r:
                    self.resources = (*resources[:i], fresh, *resources[i + 1 :])
                break
        else:
            if len(resources) >= MAX_RESOURCES:
                self.count("ignored.too_many_resources")
                self.log(
                    "warning",
                    "resource.ignored",
                    f"{cfg.target}/{name} ignored: already tracking {MAX_RESOURCES}",
                )
                return
            eligible = (
                cfg.resource_pattern is None or re.fullmatch(cfg.resource_pattern, name) is not None
            )
            self.resources = tuple(
                sorted((*resources, TargetResource(name, priority, eligible)), key=lambda r: r.name)
            )
            if eligible:
                self.log("info", "resource.online", f"{cfg.target}/{name} is online")
            else:
                self.log(
                    "info",
                    "resource.online",
                    f"{cfg.target}/{name} is online (not taking traffic: its name does not "
                    f"match resource_pattern {cfg.resource_pattern!r})",
                )
        if self.parked:
            candidates = self.candidates()
            if candidates:
                parked, self.parked = self.parked, ()
                for key in parked:
                    self.redispatch(key, self.requests[key], candidates)

    def resource_left(self, name: str) -> None:
        before = len(self.resources)
        self.resources = tuple(r for r in self.resources if r.name != name)
        if len(self.resources) != before:
            self.log("info", "resource.offline", f"{self.config.target}/{name} is offline")
        self.reroute({name})

    def all_left(self, code: str, message: str, level: LogLevel = "info") -> None:
        gone = {r.name for r in self.resources}
        self.resources = ()
        self.log(level, code, message)
        self.reroute(gone, everything=True)

    def reroute(self, gone: set[str], everything: bool = False) -> None:
        """Re-send or answer every request held by a resource that has gone, and forget the
        calls it started (nobody is left to answer)."""
        affected = sorted(
            (o.seq, key)
            for key, o in self.requests.items()
            if o.resource is not None and (everything or o.resource in gone)
        )
        candidates = self.candidates()
        for _seq, key in affected:
            o = self.requests[key]
            if candidates and self.retryable(o):
                self.count("retried.resource_gone")
                self.redispatch(key, o, candidates)
            else:
                self.count("answered.resource_gone")
                self.answer_error(key, o, _RESOURCE_GONE)
        orphans = sorted(
            (c.seq, key)
            for key, c in self.calls.items()
            if everything or resource_of(c.request.from_ or "") in gone
        )
        for _seq, key in orphans:
            c = self.calls[key]
            self.count("dropped.call_resource_gone")
            self.calls = self.calls.delete(key)
            self.queue = self.queue.delete(queue_key(c.seq))
        # A resource that has gone will not answer late; a new session with its name must not
        # have its first reply taken for one.
        for key, late in sorted(self.lates.items()):
            if everything or late.resource in gone:
                self.lates = self.lates.delete(key)


def _priority(text: object) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to +127, 0 when absent; bad values count as 0.

    Typed ``object``: a transport may hand over what its XML library gave (an int, bytes...)."""
    if isinstance(text, bool):
        return 0
    if isinstance(text, int):
        value = text
    elif isinstance(text, str):
        try:
            value = int(text.strip())
        except ValueError:
            return 0
    else:
        return 0
    return max(-128, min(127, value))
