"""Requests to the service: accepting one, choosing a resource (the routing strategies),
forwarding it with JAT, and matching the reply that comes back (see ``_machine`` for the life of
one request)."""

from __future__ import annotations

from ._jat import encode_requester, translation_problem
from ._jid import bare
from ._outputs import SendStanza
from ._routing import pick
from ._stanzas import Stanza, StanzaError
from ._state import Link, Outstanding, RequestKey, TargetResource, queue_key
from ._step_base import (
    _DUPLICATE_ID,
    _FAILURES,
    _NO_RESOURCE,
    _TOO_MANY,
    _TOO_MANY_FROM_YOU,
    _Base,
    _build,
    _rendezvous,
    all_ready,
)

__all__: list[str] = []


class _Inbound(_Base):
    __slots__ = ()

    def request(self, s: Stanza, requester: str) -> None:
        cfg = self.config
        if not self.admit(s, requester):
            return
        problem = translation_problem(requester)
        if problem is not None:
            # not-acceptable (modify): the address is valid XMPP, but the proxy cannot carry it
            # (jid-malformed would blame the sender's address itself, which is well formed).
            self.refuse(
                s, StanzaError.build("modify", "not-acceptable", problem), "refused.untranslatable"
            )
            return
        key: RequestKey = (requester, s.id or "")
        if key in self.requests:
            self.refuse(s, _DUPLICATE_ID, "refused.duplicate_id")
            return
        if len(self.requests) >= cfg.max_outstanding:
            self.refuse(s, _TOO_MANY, "refused.limit_total")
            return
        mine = self.per_requester.get(requester, 0)
        if mine >= cfg.max_per_requester:
            self.refuse(s, _TOO_MANY_FROM_YOU, "refused.limit_requester")
            return
        resource: str | None = None
        candidates = self.candidates()
        late = self.lates.get(key) if self.lates else None
        if late is not None and len(candidates) > 1:
            # Keep it away from the resource that may still answer the same key late.
            candidates = tuple(r for r in candidates if r.name != late.resource)
        if candidates:
            resource = self.choose(candidates, requester)
        elif self.resources:
            self.refuse(s, _NO_RESOURCE, "refused.no_eligible_resource")
            return
        elif self.link is not Link.UP or self.synced or self.now >= self.sync_until:
            self.refuse(s, _NO_RESOURCE, "refused.no_resource")
            return
        seq = self.next_seq
        self.next_seq = seq + 1
        tried = () if resource is None else (resource,)
        o = Outstanding(
            seq, s, self.now + cfg.request_timeout, resource, tried, self.take_late(key, resource)
        )
        self.requests = self.requests.set(key, o)
        self.queue = self.queue.set(queue_key(seq), ("in", requester, key[1]))
        self.per_requester = self.per_requester.set(requester, mine + 1)
        if resource is None:
            self.parked = (*self.parked, key)
            self.count("parked")
        else:
            self.forward(o, resource)

    def candidates(self) -> tuple[TargetResource, ...]:
        """The resources a request may go to: eligible ones not cooling down; if every eligible
        one is cooling down, all of them rather than none."""
        resources = self.resources
        now = self.now
        if all_ready(resources, now):
            return resources  # the usual case, without building a tuple
        ready = tuple(r for r in resources if r.eligible and r.cooling_until <= now)
        return ready or tuple(r for r in resources if r.eligible)

    def choose(self, candidates: tuple[TargetResource, ...], requester: str) -> str:
        """The configured strategy's pick among ``candidates`` (non-empty, sorted by name)."""
        strategy = self.config.routing
        if strategy == "random" or len(candidates) == 1:
            chosen, self.rng = pick(candidates, self.rng)
        elif strategy == "round-robin":
            chosen = candidates[self.turn % len(candidates)]
            self.turn += 1
        elif strategy == "least-outstanding":
            loads = [self.load.get(r.name, 0) for r in candidates]
            least = min(loads)
            tied = tuple(r for r, n in zip(candidates, loads, strict=True) if n == least)
            chosen, self.rng = pick(tied, self.rng)
        elif strategy == "priority":
            top = max(r.priority for r in candidates)
            chosen, self.rng = pick(tuple(r for r in candidates if r.priority == top), self.rng)
        else:  # sticky
            chosen = _rendezvous(candidates, bare(requester))
        return chosen.name

    def forward(self, o: Outstanding, resource: str) -> None:
        cfg = self.config
        r = o.request
        if cfg.routing == "least-outstanding":
            self.load = self.load.set(resource, self.load.get(resource, 0) + 1)
        forwarded = (
            "iq",
            r.type,
            r.id,
            encode_requester(cfg.proxy_domain, r.from_ or ""),
            f"{cfg.target}/{resource}",
            r.payload,
            None,
            None,
            r.extra,
        )
        self.out.append(_build(SendStanza, (_build(Stanza, forwarded),)))

    def redispatch(
        self, key: RequestKey, o: Outstanding, candidates: tuple[TargetResource, ...]
    ) -> None:
        if o.resource is not None:
            self.unload(o.resource)
        resource = self.choose(candidates, key[0])
        tried = o.tried if resource in o.tried else (*o.tried, resource)
        o = Outstanding(
            o.seq, o.request, o.deadline, resource, tried, self.take_late(key, resource)
        )
        self.requests = self.requests.set(key, o)
        self.forward(o, resource)

    def reply(self, s: Stanza, sender: str) -> None:
        # decode_requester, spelled out for the hot path: `proxy-domain/<requester>`.
        to = s.to or ""
        prefix = self.config.proxy_domain + "/"
        requester = to[len(prefix) :] if to.startswith(prefix) else None
        if not requester:
            self.count("dropped.reply_unmatched")
            return
        key: RequestKey = (requester, s.id or "")
        late = self.lates.get(key) if self.lates else None
        if late is not None and sender == f"{self.config.target}/{late.resource}":
            # The answer to a request with this key that timed out at this resource: replies
            # from one resource come in order, so the next ones from there are those.
            if late.owed > 1:
                self.lates = self.lates.set(key, late._replace(owed=late.owed - 1))
            else:
                self.lates = self.lates.delete(key)
            self.count("dropped.reply_late")
            return
        o = self.requests.get(key)
        if o is None:
            # Unknown id, a second reply, or one after the deadline: nobody is owed it.
            self.count("dropped.reply_unmatched")
            return
        resource = o.resource
        if resource is None or sender != f"{self.config.target}/{resource}":
            self.count("dropped.reply_wrong_resource")
            return
        if o.skip:
            # The late answer to an earlier request with this key (see LateReply).
            self.requests = self.requests.set(key, o._replace(skip=o.skip - 1))
            self.count("dropped.reply_late")
            return
        failed = s.type == "error" and s.error is not None and s.error.condition in _FAILURES
        self.track_failures(resource, failed)
        if failed and self.retryable(o):
            # A bounce from a session that has just gone (DESIGN.md: an IQ to an offline full JID
            # gets service-unavailable), or a resource that cannot serve: a get is safe to send
            # again elsewhere.
            untried = tuple(r for r in self.candidates() if r.name not in o.tried)
            if untried:
                self.count("retried.failure")
                self.redispatch(key, o, untried)
                return
        r = o.request
        self.answer(
            key,
            o,
            _build(Stanza, ("iq", s.type, r.id, r.to, r.from_, s.payload, s.error, None, s.extra)),
        )

    def retryable(self, o: Outstanding) -> bool:
        if o.request.type == "get":
            return self.config.retry_get
        return self.config.retry_set

    def track_failures(self, name: str, failed: bool) -> None:
        """Count a resource's failing answers in a row; take it out of rotation at the
        threshold."""
        cfg = self.config
        resources = self.resources
        for i, r in enumerate(resources):  # noqa: B007  (i and r are used after the loop)
            if r.name == name:
                break
        else:
            return
        if not failed:
            if r.failures:
                self.resources = (*resources[:i], r._replace(failures=0), *resources[i + 1 :])
            return
        if r.cooling_until > self.now:
            return  # already out of rotation: answers to requests it had before do not extend it
        failures = r.failures + 1
        cooling_until = r.cooling_until
        if cfg.failure_threshold and failures >= cfg.failure_threshold:
            failures = 0
            cooling_until = self.now + cfg.failure_cooldown
            self.count("resource.cooldown")
            self.log(
                "warning",
                "resource.cooldown",
                f"{cfg.target}/{name} answered {cfg.failure_threshold} requests in a row with "
                f"an error that says it cannot serve them; out of rotation for "
                f"{cfg.failure_cooldown:g} s or until it sends new presence",
            )
        self.resources = (
            *resources[:i],
            r._replace(failures=failures, cooling_until=cooling_until),
            *resources[i + 1 :],
        )
