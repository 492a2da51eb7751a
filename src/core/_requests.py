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
from ._queue import dequeue, enqueue, take_number
from ._recovery import deliver, owed_to_nobody, sealed_deadline
from ._routing import candidates, choose, track_failures
from ._seal import REQUEST, open_id, original_of, seal
from ._stanzas import Stanza, StanzaError, footprint
from ._state import Link, Outstanding, RequestKey, Step, TargetResource, build

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
    deadline = w.now + w.config.request_timeout
    sent = "" if resource is None else forward(w, s, resource, deadline, seq)
    o = build(
        Outstanding,
        (
            seq,
            kept,
            w.now,
            deadline,
            resource,
            () if resource is None else (resource,),
            sent,
            size,
        ),
    )
    w.requests = w.requests.set(key, o)
    w.per_requester = w.per_requester.set(account, (mine[0] + 1, mine[1] + size))
    w.bytes_held += size
    if resource is None:
        w.session = w.session._replace(parked=(*w.session.parked, key))
        w.count("parked")


def forward(w: Step, r: Stanza, resource: str, deadline: float, number: int) -> str:
    """Send request ``r`` to ``resource``, from `proxy-domain/<requester>` (``_jat``), with the
    same type and payload (mod_client_proxy's form) and an id sealed with what its answer needs
    (``_seal``; ``number`` is this process's and never given to another forward); of no use
    after ``deadline``. The id it carries."""
    cfg = w.config
    if cfg.routing == "least-outstanding":
        w.load = w.load.set(resource, w.load.get(resource, 0) + 1)
    requester = r.from_ or ""
    to = r.to or ""
    fields = (
        w.instance,
        number,
        sealed_deadline(w, deadline),
        resource,
        "" if to == cfg.proxy_domain else to,
        r.id or "",
    )
    ident = seal(cfg.seal_key, REQUEST, fields, requester)
    forwarded = (
        "iq",
        r.type,
        ident,
        f"{cfg.proxy_domain}/{requester}",  # _jat.encode_requester, on the hot path
        f"{cfg.target}/{resource}",
        r.payload,
        None,
        None,
        r.extra,
    )
    send(w, build(Stanza, forwarded), 0, deadline)
    return ident


def redispatch(w: Step, key: RequestKey, o: Outstanding, ready: tuple[TargetResource, ...]) -> None:
    """Send ``o`` (parked, or its resource gone or failing) to one of ``ready``, keeping its
    deadline."""
    if o.resource is not None and w.config.routing == "least-outstanding":
        _unload(w, o.resource)
    resource = choose(w, ready, key[0])
    tried = o.tried if resource in o.tried else (*o.tried, resource)
    r = o.request
    sent = forward(w, r, resource, o.deadline, take_number(w))  # a number of its own
    size = o.size
    if not retryable(w, r):
        # A parked request, now sent for good: its payload need not be held any more.
        r = _without_payload(r)
        size = footprint(r)
        _recount(w, bare(key[0]), size - o.size)
    o = Outstanding(o.seq, r, o.since, o.deadline, resource, tried, sent, size)
    w.requests = w.requests.set(key, o)


def reply(w: Step, s: Stanza, sender: str, measured: int = 0) -> None:
    """A result or error from a target resource to `proxy-domain/<requester>`: relayed to the
    requester (from the address the requester wrote to, with its own id) if its id is the one
    an outstanding request was last forwarded with and it comes from that request's resource; a
    failure from a resource is retried elsewhere where that is safe (:func:`retryable`). An
    answer with a sealed id this process does not hold goes to ``_recovery``; anything else is
    dropped and counted: forged or tampered ids, answers from another resource, and the late or
    second answers to what has been answered already."""
    cfg = w.config
    # _jat.decode_requester, spelled out for the hot path: `proxy-domain/<requester>`.
    to = s.to or ""
    prefix = cfg.proxy_domain + "/"
    requester = to[len(prefix) :] if to.startswith(prefix) else None
    if not requester:
        w.count("dropped.reply_unmatched")
        return
    ident = s.id or ""
    original = original_of(ident)
    o = None if original is None else w.requests.get((requester, original))
    if o is None or o.sent != ident:
        # Not the id of a forward outstanding here: check it, then see whose it is.
        _not_outstanding(w, s, requester, sender, measured=measured)
        return
    key: RequestKey = (requester, original or "")
    resource = o.resource
    if resource is None or sender != f"{cfg.target}/{resource}":
        w.count("dropped.reply_wrong_resource")
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


def _not_outstanding(w: Step, s: Stanza, requester: str, sender: str, *, measured: int) -> None:
    """An answer whose id is no outstanding request's latest forward."""
    cfg = w.config
    opened = open_id(cfg.seal_key, REQUEST, s.id or "", requester)
    if opened is None:
        # Not an id this component sealed for this requester: made up, altered, or an answer
        # readdressed to somebody else.
        w.count("dropped.reply_forged")
    elif sender != f"{cfg.target}/{opened.resource}":
        w.count("dropped.reply_wrong_resource")
    elif (why := owed_to_nobody(w, opened)) is not None:
        w.count(f"dropped.reply_{why}")
    else:
        to = opened.wrote_to or cfg.proxy_domain
        deliver(w, s, opened, to, requester, measured=measured)


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
    """The deadline of request ``key`` has passed: `remote-server-timeout` (wait). Its resource
    may still answer late: that answer carries an id no longer outstanding, and is dropped."""
    o = w.requests[key]
    w.count("answered.timeout")
    answer(w, key, o, error_reply(o.request, TIMEOUT), "timeout")


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
    else `recipient-unavailable`."""
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
