"""The express lane: the two stanzas that make up nearly all traffic, on their own.

Almost every step of a busy proxy is one of two: a user's IQ request to the proxy's domain, to
be forwarded, or the target resource's result for it, to be relayed back. For these, and only
when nothing unusual is going on, :func:`express` computes the transition with local variables
and a handful of map operations, instead of the general machine's working copy
(``_step_base._Base``: unpack 25 fields into an object, dispatch through the layers, pack them
again). It is an optimisation and nothing else: the issue's throughput target (100,000 proxied
requests per second through the core) is out of reach of the general path in CPython.

The rule that keeps it honest: :func:`express` returns either None ("not mine, ask the general
machine") or exactly the transition the general machine would return, the same state, outputs
and deadline. ``tests/property/test_express.py`` checks that over reachable states and events
(and that the lane is actually taken in the cases it is for). So every condition below that is
not the common case sends the step to the general machine, where the behaviour is written once:
a deadline due (``now >= state.due``), a refusal of any kind, a stop, the link down, a request
to a full JID at the proxy rather than its domain, a key with late replies owed, resources
cooling down or left out by ``resource_pattern``, a routing strategy other than `random` and
`round-robin`, an error reply, a reply whose resource has failures to reset, and anything else
not spelled out here.
"""

from __future__ import annotations

from ._jat import translation_problem
from ._jid import of_account
from ._outputs import SendStanza, Transition
from ._policy import charge, listed
from ._routing import next_random
from ._stanzas import Stanza
from ._state import Link, Outstanding, ProxyState, Subscription, queue_key
from ._step_base import _REQUEST_TYPES, _build, all_ready, next_deadline

__all__: list[str] = []

_INF = float("inf")


def express(state: ProxyState, now: float, s: Stanza) -> Transition | None:
    """The transition for ``s`` arriving at ``now``, if it is an ordinary request or result;
    None for anything else (the general machine then handles it)."""
    kind = s.type
    if s.kind != "iq" or (kind != "result" and kind not in _REQUEST_TYPES):
        return None
    (
        config,
        rng,
        then,
        link,
        subscription,
        resources,
        requests,
        queue,
        head,
        next_seq,
        per_requester,
        parked,
        sync_until,
        synced,
        held,
        stop_at,
        stopped,
        calls,
        routes,
        lates,
        load,
        turn,
        rates,
        sweep_at,
        due,
    ) = state
    now = now if now > then else then  # as _Base does: NaN and the past become `then`
    ident = s.id
    sender = s.from_
    if (
        now >= due  # something to expire first
        or ident is None
        or not sender
        or link is not Link.UP
        or stop_at is not None
    ):
        return None
    new_due: float | None
    if kind == "result":
        # -- the result for an outstanding request, from the resource that has it ----------------
        # (No check for a clock so large that the timeout vanishes, as for a request below: every
        # request accepted at such a time was answered in the same step, so none is left to
        # match, and `now >= due` holds for any later one.)
        to = s.to
        prefix = config.proxy_domain + "/"
        if not to or not to.startswith(prefix) or config.routing == "least-outstanding":
            return None
        requester = to[len(prefix) :]
        key = (requester, ident)
        o = requests.get(key)
        if o is None:
            return None  # (an empty requester lands here too: no request has one)
        seq, request, _deadline, resource, _tried, skip = o
        # A late reply owed for this key (``lates``) comes from another resource than the one
        # that has the request now (when they are the same, the count moved into ``skip``), so
        # this check sends it to the general machine too.
        if resource is None or skip or sender != f"{config.target}/{resource}":
            return None
        for r in resources:
            if r.name == resource and r.failures:
                return None  # a success resets the count: the general machine does that
        left = per_requester[requester] - 1
        requests = requests.delete(key)
        queue = queue.delete(queue_key(seq))
        per_requester = (
            per_requester.set(requester, left) if left else per_requester.delete(requester)
        )
        if seq == head:
            head += 1
            while head < next_seq and queue_key(head) not in queue:
                head += 1
            first: float | None = None
            if head < next_seq:
                entry_kind, jid, entry_id = queue[queue_key(head)]
                if entry_kind != "in":
                    return None  # a call or a message route is next: rare, and general
                first = requests[(jid, entry_id)].deadline
            new_due = next_deadline(
                first,
                bool(parked) or subscription is Subscription.REQUESTED,
                sync_until,
                None,
                sweep_at,
            )
        else:
            # The head stays, and nothing the deadline depends on changed (the queue holds the
            # head, so `due` is its finite deadline or earlier).
            new_due = due
        sent = (
            "iq",
            "result",
            request.id,
            request.to,
            request.from_,
            s.payload,
            s.error,
            None,
            s.extra,
        )
    else:
        # -- a request to the proxy's domain, forwarded to a resource -----------------------------
        requester = sender
        deadline = now + config.request_timeout
        if (
            deadline <= now  # a clock so large that the timeout vanishes
            or s.to != config.proxy_domain
            or not resources
            or len(requests) >= config.max_outstanding
        ):
            return None
        target = config.target
        if of_account(requester, target):
            return None  # from the target: a call, not a request
        key = (requester, ident)
        if key in requests or (lates and key in lates):
            return None
        if (config.deny and listed(requester, config.deny)) or (
            config.allow and not listed(requester, config.allow)
        ):
            return None
        mine = per_requester.get(requester, 0)
        if mine >= config.max_per_requester:
            return None
        if not all_ready(resources, now):
            return None
        if config.rate_limit > 0:
            charged = charge(config, rates, sweep_at, requester, now)
            if charged is None:
                return None
            rates, sweep_at = charged
        if translation_problem(requester) is not None:
            return None
        routing = config.routing
        if routing == "random" or (len(resources) == 1 and routing != "least-outstanding"):
            value, rng = next_random(rng)
            resource = resources[value % len(resources)].name
        elif routing == "round-robin":
            resource = resources[turn % len(resources)].name
            turn += 1
        else:
            return None
        seq = next_seq
        next_seq += 1
        requests = requests.set(
            key, _build(Outstanding, (seq, s, deadline, resource, (resource,), 0))
        )
        queue = queue.set(queue_key(seq), ("in", requester, ident))
        per_requester = per_requester.set(requester, mine + 1)
        # The queue was empty (the head was this request's seq) or its head is older than this
        # request: either way the head does not move, and the only deadlines that can have come
        # closer are this request's (if it is the head) and the sweep's (if it was just set).
        new_due = next_deadline(
            deadline if head == seq else due,
            bool(parked) or subscription is Subscription.REQUESTED,
            sync_until,
            None,
            sweep_at,
        )
        sent = (
            "iq",
            kind,
            ident,
            f"{config.proxy_domain}/{requester}",
            f"{target}/{resource}",
            s.payload,
            None,
            None,
            s.extra,
        )
    # The 25 names unpacked above, in ProxyState's order (a slip fails every test).
    next_state = (
        config,
        rng,
        now,
        link,
        subscription,
        resources,
        requests,
        queue,
        head,
        next_seq,
        per_requester,
        parked,
        sync_until,
        synced,
        held,
        stop_at,
        stopped,
        calls,
        routes,
        lates,
        load,
        turn,
        rates,
        sweep_at,
        _INF if new_due is None else new_due,
    )
    return _build(
        Transition,
        (
            _build(ProxyState, next_state),
            (_build(SendStanza, (_build(Stanza, sent),)),),
            new_due,
        ),
    )
