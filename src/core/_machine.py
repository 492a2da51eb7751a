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

Which resource: the configured strategy (``routing``: random, round-robin, least-outstanding,
priority, sticky) picks among the *eligible* online resources: those whose name matches
``resource_pattern`` and that are not cooling down after ``failure_threshold``
`feature-not-implemented`/`service-unavailable` answers in a row (if every one is cooling down,
they are used all the same). Before any of this, a requester must pass the allow/deny lists
(else `forbidden`) and its rate limit (else `policy-violation`).

The other direction. A target resource may start an IQ towards a user by addressing
``proxy.example.org/<user's full JID>``: the user gets it from ``proxy.example.org`` with an id
the proxy makes up (so two resources using the same id cannot be confused), and its answer goes
back to that resource, from the translated address, with the resource's own id: a *call*, with
the same deadline rules. Messages travel both ways the same way (a user's messages go to the
same resource while it is online: rendezvous hashing on the user's bare JID), and an error the
user's side bounces for a message from the target is routed back to the resource that sent it.

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
from ._express import express
from ._jid import domain_of, of_account, resource_of
from ._outbound import _Outbound
from ._outputs import Stopped, Transition
from ._stanzas import Stanza
from ._state import ProxyState, Subscription, queue_key
from ._step_base import _BAD_REQUEST, _REPLY_TYPES, _REQUEST_TYPES, _build, next_deadline

__all__ = ["step"]

_EVENTS = (StanzaReceived, TimePassed, ConnectionUp, ConnectionLost, StopRequested)


def step(state: ProxyState, event: Event) -> Transition:
    """Apply ``event`` to ``state``: the next state, the outputs to carry out in order, and the
    time at which to send :class:`TimePassed` next (None if nothing is pending).

    Pure and total: the same state and event always give the same transition, and no event the
    network can produce raises. Only a caller's misuse (an event that is not one of
    :data:`Event`) raises TypeError.

    An ordinary request and its result take a shortcut (``_express``) that gives exactly the
    transition the whole machine would; everything else goes through the whole machine.
    """
    if type(event) is StanzaReceived:
        fast = express(state, event.now, event.stanza)
        if fast is not None:
            return fast
    return _general(state, event)


def _general(state: ProxyState, event: Event) -> Transition:
    """:func:`step` for every event: the whole machine (``_express`` is a shortcut through it
    for the two commonest stanzas, proven to agree with it)."""
    if not isinstance(event, _EVENTS):
        raise TypeError(f"not a client-proxy event: {event!r}")
    run = _Step(state, event.now)
    if isinstance(event, ConnectionLost):
        # The link goes first: an answer falling due in this very step cannot be sent on a
        # stream that is gone, so it must be held (found by the whole-system properties, with a
        # timer firing late, as the embedding contract allows).
        run.disconnected()
    # Deadlines first: a reply that arrives after its request's deadline finds it answered.
    if run.now >= state.due:
        run.expire()
    if isinstance(event, StanzaReceived):
        run.received(event.stanza)
    elif isinstance(event, TimePassed):
        pass
    elif isinstance(event, ConnectionUp):
        run.connected()
    elif isinstance(event, ConnectionLost):
        pass
    elif isinstance(event, StopRequested):
        run.stop(event.drain)
        # A stop with no drain is due at once. No other event brings a deadline to `now`:
        # new entries are due `request_timeout` later, and parking only happens before
        # sync_until.
        run.expire()
    if run.now + run.config.request_timeout <= run.now:
        # A clock so large (or infinite) that adding the timeout changes nothing: what was
        # accepted in this step is due already, and is answered now rather than kept past it.
        run.expire()
    return run.finish()


class _Step(_Outbound):
    """The whole machine: the layers (``_step_base`` < ``_inbound`` < ``_presence`` <
    ``_outbound``), the dispatch of a received stanza, and the next state."""

    __slots__ = ()

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
        target = cfg.target
        from_target = of_account(sender, target)
        if s.kind == "iq":
            if (s.type not in _REQUEST_TYPES and s.type not in _REPLY_TYPES) or s.id is None:
                # RFC 6120 §8.2.3: type and id are required; without an id no answer can match.
                self.count("dropped.malformed")
            elif not from_target:
                if s.type in _REQUEST_TYPES:
                    self.request(s, sender)
                else:
                    self.call_answered(s, sender)
            elif s.type in _REPLY_TYPES:
                self.reply(s, sender)
            elif resource_of(to) is None:
                self.refuse(s, _BAD_REQUEST, "refused.target_to_bare")
            else:
                self.call(s)
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
            elif from_target:
                self.message_from_target(s, sender)
            else:
                self.message_to_target(s, sender)
        else:
            self.count("dropped.malformed")

    def finish(self) -> Transition:
        if self.stop_at is not None and not self.stopped and not self.requests and not self.calls:
            self.stopped = True
            self.out.append(Stopped())
            if self.held:
                self.log(
                    "warning",
                    "stop.undelivered",
                    f"stopped while offline: {len(self.held)} answer(s) could not be sent",
                )
        head = self.head
        queue = self.queue
        while head < self.next_seq and queue_key(head) not in queue:
            head += 1
        self.head = head
        first: float | None = None
        if head < self.next_seq:
            kind, jid, ident = entry = queue[queue_key(head)]
            # The usual head is a request; due() knows the other kinds.
            first = self.requests[(jid, ident)].deadline if kind == "in" else self.due(entry)
        deadline = next_deadline(
            first,
            bool(self.parked) or self.subscription is Subscription.REQUESTED,
            self.sync_until,
            None if self.stopped else self.stop_at,
            self.sweep_at,
        )
        # The same 24 names as _Base.__init__ unpacks, in ProxyState's order. Written out on
        # purpose: operator.attrgetter over ProxyState._fields costs 6% more per request
        # (callgrind), and any slip in the order fails every test.
        state = _build(
            ProxyState,
            (
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
                self.calls,
                self.routes,
                self.lates,
                self.load,
                self.turn,
                self.rates,
                self.sweep_at,
                float("inf") if deadline is None else deadline,
            ),
        )
        return _build(Transition, (state, tuple(self.out), deadline))
