"""The state machine: ``step(state, event) -> Transition``. All of the proxy's decisions live here.

Theory of operation
===================

The life of one request. The component comes up (:class:`ConnectionUp`): the proxy sends
`subscribe` to the target's bare JID and waits. When the target's server answers `subscribed`,
the proxy sends one `probe`, and the presence of each online resource of the target arrives.

A user sends ``<iq type='get' id='1234' to='proxy.example.org' from='user@example.org/abc'>``.
The proxy checks that it can carry the user's address in a resourcepart, that no request with
that id from that user is still outstanding, and that the limits allow one more. It picks an
online resource (seeded pseudo-random choice) and sends the same stanza, same id and payload, to
``svc@example.org/a`` from ``proxy.example.org/user@example.org/abc``. The request is now
*outstanding*, with a deadline ``request_timeout`` seconds away.

The resource answers ``<iq type='result' id='1234' to='proxy.example.org/user@example.org/abc'
from='svc@example.org/a'>``. The proxy finds the outstanding request by (requester, id), checks
that the reply comes from the very resource that has it, and sends the reply to
``user@example.org/abc`` from exactly the address the user wrote to, ``proxy.example.org``. The
request is answered and forgotten; a second reply finds nothing and is dropped and counted.

What else can happen to it, each ending in exactly one answer:

- the deadline passes first: the user gets `remote-server-timeout` (wait), and a late reply is
  dropped;
- its resource goes unavailable: a `get` (by default; see :class:`ProxyConfig`) is sent again to
  another online resource, keeping its deadline; otherwise the user gets
  `recipient-unavailable` (wait). The server's bounce from the departed resource then matches
  nothing and is dropped;
- the server bounces it (`service-unavailable` from the resource, which has gone without the
  proxy seeing its presence yet): retried like the above on a resource not yet tried, else relayed;
- the component stream is lost: the request stays outstanding (its resource may still answer
  after the reconnect); answers due while the link is down are held and sent when it is back;
- the proxy is stopped (:class:`StopRequested`): replies are still relayed during the drain,
  then what is left gets `service-unavailable` (wait), and :class:`Stopped` is emitted.

A request that finds no resource online gets `service-unavailable` (cancel), as with
mod_client_proxy; except in the first ``sync_grace`` seconds after a (re)connect, when the
resync has not reported the resources yet: then it is *parked* and sent as soon as one appears.

Server facts this relies on (measured on Prosody 0.12.3 and ejabberd 23.01; DESIGN.md, "Server
facts measured here"):

- a `probe` sent while the `subscribe` is pending makes Prosody answer `unsubscribed` for the
  target and drop the pending request, so the probe waits for `subscribed`;
- ejabberd answers a repeated `subscribe` with `subscribed` alone (the probe is what brings the
  resources), Prosody with `subscribed` plus each resource's presence twice, so duplicate
  presence is normal and idempotent here;
- `subscribe` while the target is offline gets a bare `unavailable` from Prosody (RFC 6121
  §4.3.2: no available resource), taken as "no resource online";
- an IQ to an offline full JID bounces `service-unavailable` (cancel) from that full JID with the
  same id, on both servers.

Totality: nothing the network sends makes ``step`` raise. A stanza the proxy cannot act on is
answered with an error where RFC 6120 §8.3 allows one, or dropped with a :class:`CountMetric`.
"""

from __future__ import annotations

from ._events import (
    ConnectionLost,
    ConnectionUp,
    Event,
    StanzaReceived,
    StopRequested,
    TimePassed,
)
from ._jat import decode_requester, encode_requester, translation_problem
from ._jid import bare, domain_of, resource_of
from ._outputs import CountMetric, LogLevel, LogRecord, Output, SendStanza, Stopped, Transition
from ._routing import pick
from ._stanzas import Stanza, StanzaError
from ._state import (
    MAX_RESOURCES,
    Link,
    Outstanding,
    ProxyState,
    RequestKey,
    Subscription,
    TargetResource,
)

__all__ = ["step"]

# The errors the proxy originates, built once (RFC 6120 §8.3.3 conditions, §8.3.2 types).
_NO_RESOURCE = StanzaError.build(
    "cancel", "service-unavailable", "no resource of the service is online"
)
_TIMEOUT = StanzaError.build("wait", "remote-server-timeout", "the service did not answer in time")
_RESOURCE_GONE = StanzaError.build(
    "wait", "recipient-unavailable", "the service went offline while handling the request"
)
_SHUTTING_DOWN = StanzaError.build("wait", "service-unavailable", "client-proxy is shutting down")
_DUPLICATE_ID = StanzaError.build(
    "cancel", "conflict", "a request with this id from you is still outstanding"
)
_TOO_MANY = StanzaError.build("wait", "resource-constraint", "too many requests outstanding")
_TOO_MANY_FROM_YOU = StanzaError.build(
    "wait", "resource-constraint", "too many of your requests are outstanding"
)
# mod_client_proxy's answers for what it does not proxy (kept for compatibility; the next
# capabilities replace them one by one).
_NOT_PROXIED = StanzaError.build("cancel", "feature-not-implemented")
_BAD_REQUEST = StanzaError.build("cancel", "bad-request")

_REQUEST_TYPES = frozenset({"get", "set"})
_REPLY_TYPES = frozenset({"result", "error"})


def step(state: ProxyState, event: Event) -> Transition:
    """Apply ``event`` to ``state``: the next state, the outputs to carry out in order, and the
    time at which to send :class:`TimePassed` next (None if nothing is pending).

    Pure and total: the same state and event always give the same transition, and no event the
    network can produce raises. Only a caller's misuse (an event that is not one of
    :data:`Event`) raises TypeError.
    """
    run = _Step(state, event.now)
    # Deadlines first: a reply that arrives after its request's deadline finds it answered.
    run.expire()
    if isinstance(event, StanzaReceived):
        run.received(event.stanza)
    elif isinstance(event, TimePassed):
        pass
    elif isinstance(event, ConnectionUp):
        run.connected()
    elif isinstance(event, ConnectionLost):
        run.disconnected()
    elif isinstance(event, StopRequested):
        run.stop(event.drain)
        # A stop with no drain is due at once. No other event brings a deadline to `now`:
        # new requests are due `request_timeout` later, and parking only happens before
        # sync_until.
        run.expire()
    else:
        raise TypeError(f"not a client-proxy event: {event!r}")
    return run.finish()


class _Step:
    """One step's working copy of the state. Lives only inside :func:`step`."""

    __slots__ = (
        "config",
        "head",
        "held",
        "link",
        "next_seq",
        "now",
        "out",
        "parked",
        "per_requester",
        "queue",
        "requests",
        "resources",
        "rng",
        "stop_at",
        "stopped",
        "subscription",
        "sync_until",
        "synced",
    )

    def __init__(self, state: ProxyState, now: float) -> None:
        self.config = state.config
        # Time never runs backwards inside the core (see _events).
        self.now = now if now > state.now else state.now
        self.link = state.link
        self.subscription = state.subscription
        self.resources = state.resources
        self.requests = state.requests
        self.queue = state.queue
        self.head = state.head
        self.next_seq = state.next_seq
        self.per_requester = state.per_requester
        self.parked = state.parked
        self.sync_until = state.sync_until
        self.synced = state.synced
        self.held = state.held
        self.rng = state.rng
        self.stop_at = state.stop_at
        self.stopped = state.stopped
        self.out: list[Output] = []

    # -- outputs -------------------------------------------------------------------------------

    def log(self, level: LogLevel, code: str, message: str) -> None:
        self.out.append(LogRecord(level, code, message))

    def count(self, name: str) -> None:
        self.out.append(CountMetric(name))

    def send(self, stanza: Stanza) -> None:
        self.out.append(SendStanza(stanza))

    def answer(self, key: RequestKey, o: Outstanding, reply: Stanza) -> None:
        """Give ``o`` its one answer and forget it."""
        self.forget(key, o)
        if self.link is Link.UP:
            self.out.append(SendStanza(reply))
        elif len(self.held) < self.config.max_outstanding:
            self.held = (*self.held, reply)
        else:
            # Only a transport that keeps delivering requests while it says the link is down
            # gets here; the state must stay bounded all the same.
            self.count("dropped.held_overflow")

    def answer_error(self, key: RequestKey, o: Outstanding, error: StanzaError) -> None:
        self.answer(key, o, _error_reply(o.request, error))

    def forget(self, key: RequestKey, o: Outstanding) -> None:
        self.requests = self.requests.delete(key)
        self.queue = self.queue.delete(o.seq)
        requester = key[0]
        left = self.per_requester[requester] - 1
        self.per_requester = (
            self.per_requester.set(requester, left)
            if left
            else self.per_requester.delete(requester)
        )
        if o.resource is None:
            self.parked = tuple(k for k in self.parked if k != key)

    # -- time ----------------------------------------------------------------------------------

    def expire(self) -> None:
        """Answer everything whose deadline is now or past."""
        now = self.now
        queue = self.queue
        while self.head < self.next_seq:
            key = queue.get(self.head)
            if key is None:
                self.head += 1
                continue
            o = self.requests[key]
            if o.deadline > now:
                break
            self.count("answered.timeout")
            self.answer_error(key, o, _TIMEOUT)
            queue = self.queue
            self.head += 1
        if self.parked and self.sync_until <= now:
            self.log(
                "warning",
                "resync.no_resource",
                f"no resource of {self.config.target} came online within "
                f"{self.config.sync_grace:g} s of connecting; refusing {len(self.parked)} "
                "waiting request(s)",
            )
            for key in self.parked:
                self.count("refused.no_resource")
                self.answer_error(key, self.requests[key], _NO_RESOURCE)
        if self.subscription is Subscription.REQUESTED and self.sync_until <= now:
            cfg = self.config
            self.subscription = Subscription.UNANSWERED
            self.log(
                "warning",
                "subscription.pending",
                f"{cfg.target} has not approved the presence subscription from "
                f"{cfg.proxy_domain} after {cfg.sync_grace:g} s: until it does, requests get "
                "service-unavailable (README: approving the subscription)",
            )
        if self.stop_at is not None and not self.stopped and self.stop_at <= now:
            self.answer_all(_SHUTTING_DOWN, "answered.shutdown")

    def answer_all(self, error: StanzaError, counter: str) -> None:
        for _seq, key in sorted(self.queue.items()):
            self.count(counter)
            self.answer_error(key, self.requests[key], error)

    # -- connection ----------------------------------------------------------------------------

    def connected(self) -> None:
        cfg = self.config
        self.link = Link.UP
        for stanza in self.held:
            self.send(stanza)
        if self.held:
            self.log("info", "held.sent", f"sent {len(self.held)} answer(s) held while offline")
        self.held = ()
        # What we knew of the resources may be stale; the resync rebuilds it. Requests already
        # sent keep their resource, so its reply is still accepted.
        self.resources = ()
        self.subscription = Subscription.REQUESTED
        self.sync_until = self.now + cfg.sync_grace
        self.synced = False
        # Subscribe only; the probe waits for `subscribed` (Prosody drops a pending subscription
        # on probe). A repeated subscribe is harmless and doubles as the resync.
        self.send(Stanza("presence", type="subscribe", from_=cfg.proxy_domain, to=cfg.target))
        self.log(
            "info",
            "connection.up",
            f"connected as {cfg.proxy_domain}; asking {cfg.target} for its presence",
        )

    def disconnected(self) -> None:
        if self.link is Link.DOWN:
            return
        self.link = Link.DOWN
        self.subscription = Subscription.NONE
        if self.stop_at is not None:
            self.log("info", "connection.closed", "disconnected")
            return
        self.log(
            "warning",
            "connection.lost",
            f"connection lost with {len(self.requests)} request(s) outstanding; "
            "they stay until their deadlines",
        )

    def stop(self, drain: float) -> None:
        if self.stop_at is not None:
            return
        drain = drain if drain > 0 else 0.0  # also turns NaN into 0
        self.stop_at = self.now + drain
        self.log(
            "info",
            "stop.requested",
            f"stopping: refusing new requests, {len(self.requests)} outstanding, "
            f"waiting up to {drain:g} s for their replies",
        )

    # -- stanzas -------------------------------------------------------------------------------

    def received(self, s: Stanza) -> None:
        cfg = self.config
        sender = s.from_
        to = s.to
        if not sender or not to:
            self.count("dropped.malformed")
            return
        proxy = cfg.proxy_domain
        if to != proxy and not to.startswith(proxy + "/") and domain_of(to) != proxy:
            self.count("dropped.not_for_us")
            return
        from_target = bare(sender) == cfg.target
        if s.kind == "iq":
            if (s.type not in _REQUEST_TYPES and s.type not in _REPLY_TYPES) or s.id is None:
                # RFC 6120 §8.2.3: type and id are required; without an id no answer can match.
                self.count("dropped.malformed")
            elif not from_target:
                if s.type in _REQUEST_TYPES:
                    self.request(s, sender)
                else:
                    self.count("dropped.unsolicited_reply")
            elif s.type in _REPLY_TYPES:
                self.reply(s, sender)
            elif resource_of(to) is None:
                self.refuse(s, _BAD_REQUEST, "refused.target_to_bare")
            else:
                self.refuse(s, _NOT_PROXIED, "refused.target_initiated")
        elif s.kind == "presence":
            if from_target and to == cfg.proxy_domain:
                self.target_presence(s, sender)
            elif from_target:
                self.count("ignored.presence_to_resource")
            else:
                self.refuse(s, _BAD_REQUEST, "refused.presence")
        elif s.kind == "message":
            if from_target and resource_of(to) is None:
                self.refuse(s, _BAD_REQUEST, "refused.message")
            else:
                self.refuse(s, _NOT_PROXIED, "refused.message")
        else:
            self.count("dropped.malformed")

    def refuse(self, s: Stanza, error: StanzaError, counter: str) -> None:
        """Answer ``s`` with ``error``, unless it is an error itself (RFC 6120 §8.3.1)."""
        if s.type == "error":
            self.count("dropped.error_to_error")
            return
        self.count(counter)
        self.send(_error_reply(s, error))

    def request(self, s: Stanza, requester: str) -> None:
        cfg = self.config
        if self.stop_at is not None:
            self.refuse(s, _SHUTTING_DOWN, "refused.shutting_down")
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
        if self.resources:
            resource = self.choose(self.resources)
        elif self.link is not Link.UP or self.synced or self.now >= self.sync_until:
            self.refuse(s, _NO_RESOURCE, "refused.no_resource")
            return
        seq = self.next_seq
        self.next_seq = seq + 1
        tried = () if resource is None else (resource,)
        o = Outstanding(seq, s, self.now + cfg.request_timeout, resource, tried)
        self.requests = self.requests.set(key, o)
        self.queue = self.queue.set(seq, key)
        self.per_requester = self.per_requester.set(requester, mine + 1)
        if resource is None:
            self.parked = (*self.parked, key)
            self.count("parked")
        else:
            self.forward(o, resource)

    def choose(self, candidates: tuple[TargetResource, ...]) -> str:
        chosen, self.rng = pick(candidates, self.rng)
        return chosen.name

    def forward(self, o: Outstanding, resource: str) -> None:
        cfg = self.config
        r = o.request
        self.send(
            Stanza(
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
        )

    def redispatch(
        self, key: RequestKey, o: Outstanding, candidates: tuple[TargetResource, ...]
    ) -> None:
        resource = self.choose(candidates)
        tried = o.tried if resource in o.tried else (*o.tried, resource)
        o = Outstanding(o.seq, o.request, o.deadline, resource, tried)
        self.requests = self.requests.set(key, o)
        self.forward(o, resource)

    def reply(self, s: Stanza, sender: str) -> None:
        requester = decode_requester(self.config.proxy_domain, s.to or "")
        if requester is None:
            self.count("dropped.reply_unmatched")
            return
        key: RequestKey = (requester, s.id or "")
        o = self.requests.get(key)
        if o is None:
            # Unknown id, a second reply, or one after the deadline: nobody is owed it.
            self.count("dropped.reply_unmatched")
            return
        if o.resource is None or sender != f"{self.config.target}/{o.resource}":
            self.count("dropped.reply_wrong_resource")
            return
        if (
            s.type == "error"
            and s.error is not None
            and s.error.condition == "service-unavailable"
            and self.retryable(o)
        ):
            # Most likely the server's bounce for a session that has just gone (DESIGN.md: IQ to
            # an offline full JID). A get is safe to send again elsewhere.
            untried = tuple(r for r in self.resources if r.name not in o.tried)
            if untried:
                self.count("retried.bounce")
                self.redispatch(key, o, untried)
                return
        r = o.request
        self.answer(
            key, o, Stanza("iq", s.type, r.id, r.to, r.from_, s.payload, s.error, None, s.extra)
        )

    def retryable(self, o: Outstanding) -> bool:
        if o.request.type == "get":
            return self.config.retry_get
        return self.config.retry_set

    # -- the target's presence -----------------------------------------------------------------

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
        resources = self.resources
        for i, r in enumerate(resources):
            if r.name == name:
                if r.priority != priority:
                    self.resources = (
                        *resources[:i],
                        TargetResource(name, priority),
                        *resources[i + 1 :],
                    )
                break
        else:
            if len(resources) >= MAX_RESOURCES:
                self.count("ignored.too_many_resources")
                self.log(
                    "warning",
                    "resource.ignored",
                    f"{self.config.target}/{name} ignored: already tracking {MAX_RESOURCES}",
                )
                return
            self.resources = tuple(
                sorted((*resources, TargetResource(name, priority)), key=lambda r: r.name)
            )
            self.log("info", "resource.online", f"{self.config.target}/{name} is online")
        if self.parked:
            parked, self.parked = self.parked, ()
            online = self.resources
            for key in parked:
                o = self.requests[key]
                self.redispatch(key, o, online)

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
        """Re-send or answer every request held by a resource that has gone."""
        affected = sorted(
            (o.seq, key)
            for key, o in self.requests.items()
            if o.resource is not None and (everything or o.resource in gone)
        )
        online = self.resources
        for _seq, key in affected:
            o = self.requests[key]
            if online and self.retryable(o):
                self.count("retried.resource_gone")
                self.redispatch(key, o, online)
            else:
                self.count("answered.resource_gone")
                self.answer_error(key, o, _RESOURCE_GONE)

    # -- the result ----------------------------------------------------------------------------

    def finish(self) -> Transition:
        if self.stop_at is not None and not self.stopped and not self.requests:
            self.stopped = True
            self.out.append(Stopped())
            if self.held:
                self.log(
                    "warning",
                    "stop.undelivered",
                    f"stopped while offline: {len(self.held)} answer(s) could not be sent",
                )
        head = self.head
        while head < self.next_seq and head not in self.queue:
            head += 1
        self.head = head
        deadline: float | None = None
        if head < self.next_seq:
            deadline = self.requests[self.queue[head]].deadline
        if (self.parked or self.subscription is Subscription.REQUESTED) and (
            deadline is None or self.sync_until < deadline
        ):
            deadline = self.sync_until
        if (
            self.stop_at is not None
            and not self.stopped
            and (deadline is None or self.stop_at < deadline)
        ):
            deadline = self.stop_at
        state = ProxyState(
            self.config,
            self.rng,
            self.now,
            self.link,
            self.subscription,
            self.resources,
            self.requests,
            self.queue,
            self.head,
            self.next_seq,
            self.per_requester,
            self.parked,
            self.sync_until,
            self.synced,
            self.held,
            self.stop_at,
            self.stopped,
        )
        return Transition(state, tuple(self.out), deadline)


def _error_reply(s: Stanza, error: StanzaError) -> Stanza:
    """The error answer to ``s`` (RFC 6120 §8.3.1): same id, from the address it was sent to."""
    return Stanza(s.kind, "error", s.id, s.to, s.from_, (), error, None, s.extra)


def _priority(text: str | None) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to +127, 0 when absent; bad values count as 0."""
    if text is None:
        return 0
    try:
        value = int(text.strip())
    except ValueError:
        return 0
    return max(-128, min(127, value))
