"""Requests to the service: accepting one (:func:`accept`), forwarding it with JAT
(:func:`forward`), matching the reply that comes back (:func:`reply`), and every other way a
request ends (:func:`time_out`, :func:`reroute`, :func:`refuse_parked`, :func:`shut_down`).
``_machine`` tells the life of one request; this module carries it out.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import (
    DUPLICATE_ID,
    NO_RESOURCE,
    RESOURCE_GONE,
    SHUTTING_DOWN,
    TIMEOUT,
    error_reply,
    not_acceptable,
    refuse,
)
from ._jat import translation_problem
from ._jid import bare
from ._link import send
from ._outputs import ended
from ._policy import admit, within_caps
from ._queue import dequeue, enqueue
from ._routing import candidates, choose, track_failures
from ._stanzas import Stanza, StanzaError, footprint
from ._state import LateReply, Link, Outstanding, RequestKey, Step, TargetResource, build

__all__ = [
    "accept",
    "answer",
    "forward",
    "redispatch",
    "refuse_parked",
    "reply",
    "reroute",
    "retryable",
    "shut_down",
    "time_out",
]

#: Answers that say "this resource cannot serve" rather than "this request is wrong".
_FAILURES = frozenset({"feature-not-implemented", "service-unavailable"})


def accept(w: Step, s: Stanza, requester: str, measured: int) -> None:
    """A user's IQ get/set to the service (``measured`` bytes as read): refuse it (admission,
    an address JAT cannot carry, a duplicate id, the caps in requests and bytes, no resource),
    park it (no resource known yet, within ``sync_grace`` of a connect), or make it outstanding
    and forward it to the chosen resource. Its payload is kept only while it may be sent again
    (parked, or :func:`retryable`); otherwise the proxy holds its addresses alone."""
    account = bare(requester)
    if not admit(w, s, requester, account):
        return
    problem = translation_problem(requester)
    if problem is not None:
        refuse(w, s, not_acceptable(problem), "refused.untranslatable")
        return
    key: RequestKey = (requester, s.id or "")
    if key in w.requests:
        refuse(w, s, DUPLICATE_ID, "refused.duplicate_id")
        return
    ready = candidates(w)
    kept = s
    if ready and not retryable(w, s):
        # Sent at once and never again: the payload need not be held.
        kept = _without_payload(s)
    size = footprint(s, measured) if kept is s else footprint(kept)
    mine = within_caps(w, s, account, size)
    if mine is None:
        return
    resource: str | None = None
    late = w.lates.get(key) if w.lates else None
    if late is not None and len(ready) > 1:
        # Keep it away from the resources that may still answer the same key late.
        clear = tuple(r for r in ready if not late.of(r.name))
        if clear:
            ready = clear
    if ready:
        resource = choose(w, ready, requester)
    else:
        session = w.session
        if session.resources:
            refuse(w, s, NO_RESOURCE, "refused.no_eligible_resource")
            return
        if session.link is not Link.UP or session.synced or w.now >= session.sync_until:
            refuse(w, s, NO_RESOURCE, "refused.no_resource")
            return
    seq = enqueue(w, ("in", requester, key[1]))
    o = build(
        Outstanding,
        (
            seq,
            kept,
            w.now,
            w.now + w.config.request_timeout,
            resource,
            () if resource is None else (resource,),
            _take_late(w, key, resource) if w.lates else 0,
            size,
        ),
    )
    w.requests = w.requests.set(key, o)
    w.per_requester = w.per_requester.set(account, (mine[0] + 1, mine[1] + size))
    w.bytes_held += size
    if resource is None:
        w.session = w.session._replace(parked=(*w.session.parked, key))
        w.count("parked")
    else:
        forward(w, s, resource, o.deadline)


def forward(w: Step, r: Stanza, resource: str, deadline: float) -> None:
    """Send request ``r`` to ``resource``, from `proxy-domain/<requester>` (``_jat``), with the
    same type, id and payload (mod_client_proxy's form); of no use after ``deadline``."""
    cfg = w.config
    if cfg.routing == "least-outstanding":
        w.load = w.load.set(resource, w.load.get(resource, 0) + 1)
    forwarded = (
        "iq",
        r.type,
        r.id,
        f"{cfg.proxy_domain}/{r.from_}",  # _jat.encode_requester, on the hot path
        f"{cfg.target}/{resource}",
        r.payload,
        None,
        None,
        r.extra,
    )
    send(w, build(Stanza, forwarded), 0, deadline)


def redispatch(w: Step, key: RequestKey, o: Outstanding, ready: tuple[TargetResource, ...]) -> None:
    """Send ``o`` (parked, or its resource gone or failing) to one of ``ready``, keeping its
    deadline."""
    if o.resource is not None and w.config.routing == "least-outstanding":
        _unload(w, o.resource)
    resource = choose(w, ready, key[0])
    tried = o.tried if resource in o.tried else (*o.tried, resource)
    r = o.request
    forward(w, r, resource, o.deadline)
    size = o.size
    if not retryable(w, r):
        # A parked request, now sent for good: its payload need not be held any more.
        r = _without_payload(r)
        size = footprint(r)
        _recount(w, bare(key[0]), size - o.size)
    late = _take_late(w, key, resource)
    o = Outstanding(o.seq, r, o.since, o.deadline, resource, tried, late, size)
    w.requests = w.requests.set(key, o)


def reply(w: Step, s: Stanza, sender: str, measured: int = 0) -> None:
    """A result or error from a target resource to `proxy-domain/<requester>`: relayed to the
    requester if it answers an outstanding request and comes from the resource that has it
    (from the address the requester wrote to, with its id); dropped and counted otherwise. A
    failure from a resource is retried elsewhere where that is safe (:func:`retryable`)."""
    cfg = w.config
    # _jat.decode_requester, spelled out for the hot path: `proxy-domain/<requester>`.
    to = s.to or ""
    prefix = cfg.proxy_domain + "/"
    requester = to[len(prefix) :] if to.startswith(prefix) else None
    if not requester:
        w.count("dropped.reply_unmatched")
        return
    key: RequestKey = (requester, s.id or "")
    if w.lates:
        late = w.lates.get(key)
        if late is not None and sender.startswith(cfg.target + "/"):
            name = sender[len(cfg.target) + 1 :]
            owed = late.of(name)
            if owed:
                # The answer to a request with this key that timed out at this resource:
                # replies from one resource come in order, so the next ones from there are those.
                _set_late(w, key, late, name, owed - 1)
                w.count("dropped.reply_late")
                return
    o = w.requests.get(key)
    if o is None:
        # Unknown id, a second reply, or one after the deadline: nobody is owed it.
        w.count("dropped.reply_unmatched")
        return
    resource = o.resource
    if resource is None or sender != f"{cfg.target}/{resource}":
        w.count("dropped.reply_wrong_resource")
        return
    if o.skip:
        # The late answer to an earlier request with this key (see LateReply).
        w.requests = w.requests.set(key, o._replace(skip=o.skip - 1))
        w.count("dropped.reply_late")
        return
    error = s.error
    failed = s.type == "error" and error is not None and error.condition in _FAILURES
    track_failures(w, resource, failed)
    if failed and retryable(w, o.request):
        # A bounce from a session that has just gone (DESIGN.md: an IQ to an offline full JID
        # gets service-unavailable), or a resource that cannot serve: a get is safe to send
        # again elsewhere.
        untried = tuple(r for r in candidates(w) if r.name not in o.tried)
        if untried:
            w.count("retried.failure")
            redispatch(w, key, o, untried)
            return
    r = o.request
    relayed = build(Stanza, ("iq", s.type, r.id, r.to, r.from_, s.payload, error, None, s.extra))
    answer(w, key, o, relayed, "error" if s.type == "error" else "result", measured=measured)


def retryable(w: Step, r: Stanza) -> bool:
    """May request ``r`` be sent again to another resource: a get if ``retry_get``, a set if
    ``retry_set`` (and only while its payload is held: a reload may allow retries that a
    request accepted before it can no longer take)."""
    if r.payload is _NOT_KEPT:
        return False
    if r.type == "get":
        return w.config.retry_get
    return w.config.retry_set


#: The payload of a request that will not be sent again: dropped, so that it holds no memory.
_NOT_KEPT: object = type("NotKept", (), {"__repr__": lambda self: "<payload not kept>"})()


def _without_payload(r: Stanza) -> Stanza:
    return build(Stanza, (r.kind, r.type, r.id, r.from_, r.to, _NOT_KEPT, r.error, None, r.extra))


def _recount(w: Step, account: str, change: int) -> None:
    """``change`` more bytes held for ``account`` (a request's size changed)."""
    count, size = w.per_requester[account]
    w.per_requester = w.per_requester.set(account, (count, size + change))
    w.bytes_held += change


def answer(
    w: Step, key: RequestKey, o: Outstanding, reply: Stanza, outcome: str, *, measured: int = 0
) -> None:
    """Give ``o`` its one answer (``measured`` bytes, if it came from the target) and forget it;
    ``outcome`` says how it ended (its metrics)."""
    w.requests = w.requests.delete(key)
    dequeue(w, o.seq)
    account = bare(key[0])
    count, size = w.per_requester[account]
    w.per_requester = (
        w.per_requester.set(account, (count - 1, size - o.size))
        if count > 1
        else w.per_requester.delete(account)
    )
    w.bytes_held -= o.size
    if o.resource is None:
        w.session = w.session._replace(parked=tuple(k for k in w.session.parked if k != key))
    elif w.config.routing == "least-outstanding":
        _unload(w, o.resource)
    send(w, reply, measured)
    w.out.append(ended("inbound", outcome, o.since, w.now))


def _answer_error(w: Step, key: RequestKey, error: StanzaError, outcome: str) -> None:
    o = w.requests[key]
    answer(w, key, o, error_reply(o.request, error), outcome)


def _unload(w: Step, resource: str) -> None:
    """One request fewer at ``resource``, for `least-outstanding` routing."""
    left = w.load.get(resource, 0) - 1
    w.load = w.load.set(resource, left) if left > 0 else w.load.delete(resource)


def time_out(w: Step, key: RequestKey) -> None:
    """The deadline of request ``key`` has passed: `remote-server-timeout` (wait), and its
    resource may still answer late (:class:`LateReply`)."""
    o = w.requests[key]
    w.count("answered.timeout")
    answer(w, key, o, error_reply(o.request, TIMEOUT), "timeout")
    if o.resource is not None:
        _expect_late(w, key, o.resource, o.skip + 1)


def refuse_parked(w: Step) -> None:
    """No resource to send the parked requests to, and none to wait for: `service-unavailable`
    (cancel), as with no resource online."""
    for key in w.session.parked:
        w.count("refused.no_resource")
        _answer_error(w, key, NO_RESOURCE, "no_resource")


def shut_down(w: Step, key: RequestKey) -> None:
    """The drain is over and request ``key`` is still outstanding: `service-unavailable`
    (wait)."""
    w.count("answered.shutdown")
    _answer_error(w, key, SHUTTING_DOWN, "shutdown")


def reroute(w: Step, gone: Iterable[str] | None) -> None:
    """Re-send or answer every request held by a resource in ``gone`` (None: every resource),
    in acceptance order: another resource takes it where that is safe (:func:`retryable`),
    else `recipient-unavailable`. A resource that has gone will not answer late, so its late
    replies are forgotten too: a new session with its name must not have its first reply taken
    for one."""
    names = None if gone is None else frozenset(gone)
    affected = sorted(
        (o.seq, key)
        for key, o in w.requests.items()
        if o.resource is not None and (names is None or o.resource in names)
    )
    ready = candidates(w)
    for _seq, key in affected:
        o = w.requests[key]
        if ready and retryable(w, o.request):
            w.count("retried.resource_gone")
            redispatch(w, key, o, ready)
        else:
            w.count("answered.resource_gone")
            answer(w, key, o, error_reply(o.request, RESOURCE_GONE), "resource_gone")
    for key, late in sorted(w.lates.items()):
        kept = tuple((name, n) for name, n in late.owed if names is not None and name not in names)
        if kept != late.owed:
            w.lates = w.lates.set(key, late._replace(owed=kept)) if kept else w.lates.delete(key)


def _expect_late(w: Step, key: RequestKey, resource: str, owed: int) -> None:
    """Remember that ``resource`` may still send ``owed`` more replies for ``key``."""
    old = w.lates.get(key)
    if old is None and len(w.lates) >= w.config.max_outstanding:
        # Bounded: forget the oldest (a scan, only ever at the cap).
        oldest = min(w.lates.items(), key=lambda item: item[1].seq)
        w.lates = w.lates.delete(oldest[0])
        w.count("dropped.late_reply_memory")
    seq = w.next_seq
    w.next_seq = seq + 1
    if old is None:
        _set_late(w, key, LateReply(seq, ()), resource, owed)
    else:
        _set_late(w, key, old._replace(seq=seq), resource, owed + old.of(resource))


def _set_late(w: Step, key: RequestKey, late: LateReply, resource: str, n: int) -> None:
    """``key``'s debts as in ``late``, with ``resource``'s set to ``n`` (0: forgotten)."""
    others = [debt for debt in late.owed if debt[0] != resource]
    owed = tuple(sorted([*others, (resource, n)] if n else others))
    w.lates = w.lates.set(key, late._replace(owed=owed)) if owed else w.lates.delete(key)


def _take_late(w: Step, key: RequestKey, resource: str | None) -> int:
    """A request with ``key`` goes to ``resource``: the late replies ``resource`` owes for the
    key, if any, are now the request's to skip."""
    late = w.lates.get(key)
    if late is None or resource is None:
        return 0
    owed = late.of(resource)
    if owed:
        _set_late(w, key, late, resource, 0)
    return owed
