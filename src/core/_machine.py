"""The state machine: ``step(state, event) -> Transition``. All of the proxy's decisions live here
and in the modules this one names.

Theory of operation
===================

Each paragraph names, in brackets, the functions that carry it out; each idea lives in one
module, and a step visits each at most once.

**A step** [:func:`step`]. The state is opened into a working copy (``_state.Step``), anything
whose deadline has passed is dealt with first (``_deadlines.expire``), the event is applied, and
the copy is frozen into the next state with the time of the next deadline
(``_deadlines.next_deadline``, ``Step.close``). Every stanza goes through :func:`_received`,
which looks at its kind, type, sender and addressee and hands it to the one function that deals
with it.

**The connection** [``_link.connected``]. The component comes up (:class:`ConnectionUp`): the
proxy sends `subscribe` to the target's bare JID and waits. When the target's server answers
`subscribed`, the proxy sends one `probe` [``_presence.target_presence``], and the presence of
each online resource of the target arrives [``_presence._available``].

**A request** [``_requests.accept``]. A user sends ``<iq type='get' id='1234'
to='proxy.example.org' from='user@example.org/abc'>``. It must pass admission: the allow and
deny lists, not shutting down, the rate of its account (``user@example.org``, all its resources
together) [``_policy.admit``]; an address that fits in a resourcepart
[``_jat.translation_problem``]; no request with that id from that user still outstanding; the
caps on what is held, over all and per account, in requests and in bytes
[``_policy.within_caps``]. An online resource is picked among those eligible
[``_routing.candidates``, ``_routing.choose``], the request takes the next place in the deadline
queue [``_queue.enqueue``], ``request_timeout`` seconds away, and the same stanza, same
payload, goes to ``svc@example.org/a`` from ``proxy.example.org/user@example.org/abc``
[``_requests.forward``], with an id of the proxy's own that carries, sealed, ``1234`` and what
its answer needs [``_seal``], marked as of no use after its deadline (``SendStanza.until``: a
transport whose server reads slowly may hold it back behind the answers it owes). It is now
*outstanding*.

**Its reply** [``_requests.reply``]. The resource answers with the id it got, to
``proxy.example.org/user@example.org/abc``. The proxy finds the outstanding request by the
requester and the id sealed inside, checks that the reply carries exactly the id the request was
last forwarded with and comes from the very resource that has it, and sends the reply to
``user@example.org/abc`` from exactly the address the user wrote to, ``proxy.example.org``, with
id ``1234`` [``_requests.answer``, ``_link.send``]. The request is answered and forgotten
[``_queue.dequeue``]; a second reply, or a late one, carries an id no longer outstanding and is
dropped and counted. A reply whose id another instance sealed (before a restart, or before a
standby took over) is delivered once if it verifies and is in time [``_recovery``].

What else can happen to it, each ending in exactly one answer:

- the deadline passes first: the user gets `remote-server-timeout` (wait), and a late reply is
  dropped (its id is no longer outstanding) [``_deadlines.expire``, ``_requests.time_out``];
- its resource goes unavailable: a `get` (by default; see :class:`ProxyConfig`) is sent again to
  another online resource, keeping its deadline; otherwise the user gets
  `recipient-unavailable` (wait) [``_requests.reroute``]. The server's bounce from the departed
  resource then matches nothing and is dropped;
- the server bounces it (`service-unavailable` from the resource, which has gone without the
  proxy seeing its presence yet): retried like the above on a resource not yet tried, else
  relayed [``_requests.reply``, ``_routing.track_failures``];
- the component stream is lost: the request stays outstanding (its resource may still answer
  after the reconnect); answers due while the link is down are held and sent when it is back
  [``_link.disconnected``, ``_link.send``, ``_link.connected``];
- the proxy is stopped (:class:`StopRequested`): replies are still relayed during the drain,
  then what is left gets `service-unavailable` (wait), and :class:`Stopped` is emitted
  [``_link.stop``, ``_deadlines.expire``, ``_requests.shut_down``, ``_link.stopped``]. A
  request the server routed before it read the proxy's end of stream still gets its answer, on
  a fresh stream [``_link.end_of_stream``, ``_link.late_arrival``, ``_link.disconnected``].

**Which resource** [``_routing``]. The configured strategy (``routing``: random, round-robin,
least-outstanding, priority, sticky) picks among the *eligible* online resources: those whose
name matches ``resource_pattern`` and that are not cooling down after ``failure_threshold``
`feature-not-implemented`/`service-unavailable` answers in a row (if every one is cooling down,
they are used all the same).

**The other direction** [``_calls``, ``_messages``]. A target resource may start an IQ towards a
user by addressing ``proxy.example.org/<user's full JID>``: the user gets it from
``proxy.example.org`` with a sealed id of the proxy's own (so two resources using the same id
cannot be confused, and another instance can deliver the answer), and its answer goes back to
that resource, from the translated address, with the resource's own id: a *call*, with the same
deadline rules [``_calls.call``, ``_calls.call_answered``]. Messages travel both ways the same
way (a user's messages go to the same resource while it is online: rendezvous hashing on the
user's bare JID), and an error the user's side bounces for a message from the target is routed
back to the resource that sent it [``_messages``].

**No resource** [``_requests.accept``, ``_presence``]. A request that finds no resource online
gets `service-unavailable` (cancel), as with mod_client_proxy; except in the first
``sync_grace`` seconds after a (re)connect, when the resync has not reported the resources yet:
then it is *parked* and sent as soon as one appears, or refused when the grace ends
[``_requests.refuse_parked``].

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
answered with an error where RFC 6120 §8.3 allows one [``_errors.refuse``], or dropped with a
:class:`CountMetric`.
"""

from __future__ import annotations

from ._calls import call, call_answered
from ._deadlines import expire, next_deadline
from ._errors import BAD_REQUEST, refuse
from ._events import (
    ConfigChanged,
    ConnectionLost,
    ConnectionUp,
    EndOfStreamSent,
    Event,
    StanzaReceived,
    StopRequested,
    TimePassed,
)
from ._jid import domain_of, resource_of
from ._link import connected, disconnected, end_of_stream, late_arrival, stop, stopped
from ._messages import message_from_target, message_to_target
from ._outputs import Transition
from ._presence import target_presence
from ._reload import reconfigure
from ._requests import accept, reply
from ._stanzas import Stanza
from ._state import Link, ProxyState, Step, build

__all__ = ["step"]

_INF = float("inf")
_CLOSING = Link.CLOSING
_EVENTS = frozenset(
    {
        StanzaReceived,
        TimePassed,
        ConnectionUp,
        ConnectionLost,
        StopRequested,
        EndOfStreamSent,
        ConfigChanged,
    }
)


def step(state: ProxyState, event: Event) -> Transition:
    """Apply ``event`` to ``state``: the next state, the outputs to carry out in order, and the
    time at which to send :class:`TimePassed` next (None if nothing is pending).

    Pure and total: the same state and event always give the same transition, and no event the
    network can produce raises. Only a caller's misuse (an event that is not one of
    :data:`Event`) raises TypeError.
    """
    if type(event) is StanzaReceived:  # nearly every step
        w = Step(state, event.now)
        wall = event.wall
        if wall is not None:
            w.epoch = wall - w.now
        # Deadlines first: a reply that arrives after its request's deadline finds it answered.
        if w.now >= state.due:
            expire(w)
        if w.session.link is _CLOSING:
            late_arrival(w, event.stanza)
        _received(w, event.stanza, event.size)
    elif type(event) in _EVENTS:
        w = Step(state, event.now)
        if isinstance(event, ConnectionUp | TimePassed) and event.wall is not None:
            w.epoch = event.wall - w.now
        if isinstance(event, ConnectionLost):
            # The link goes first: an answer falling due in this very step cannot be sent on a
            # stream that is gone, so it must be held (found by the whole-system properties,
            # with a timer firing late, as the embedding contract allows).
            disconnected(w)
        if w.now >= state.due:
            expire(w)
        if isinstance(event, ConnectionUp):
            connected(w)
        elif isinstance(event, StopRequested):
            stop(w, event.drain)
            # A stop with no drain is due at once. No other event brings a deadline to `now`:
            # new entries are due `request_timeout` later, and parking only happens before
            # sync_until.
            expire(w)
        elif isinstance(event, EndOfStreamSent):
            end_of_stream(w)
        elif isinstance(event, ConfigChanged):
            reconfigure(w, event.config)
            expire(w)  # a shorter request_timeout may have brought deadlines to now
    else:
        raise TypeError(f"not a client-proxy event: {event!r}")
    now = w.now
    if now + w.config.request_timeout <= now:
        # A clock so large (or infinite) that adding the timeout changes nothing: what was
        # accepted in this step is due already, and is answered now rather than kept past it.
        expire(w)
    session = w.session
    if session.stop_at is not None and not session.stopped and not w.requests and not w.calls:
        stopped(w)
    # When none of the deadlines can have moved (the same session, sweep and config, and the
    # first entry of the queue still there: _queue.dequeue moves head on when it goes), the
    # last one stands; that is most steps. Else _deadlines.next_deadline works it out.
    head = w.head
    if (
        head == state.head
        and head < state.next_seq
        and w.session is state.session
        and w.sweep_at == state.sweep_at
        and w.config is state.config
    ):
        due = state.due
        deadline = None if due == _INF else due
    else:
        deadline = next_deadline(w)
        w.due = _INF if deadline is None else deadline
    return build(Transition, (w.close(), tuple(w.out), deadline))


def _received(w: Step, s: Stanza, size: int) -> None:
    """Hand a stanza to the one function that deals with it, by kind, type, sender and
    addressee (RFC 6120 §8.2.3: an IQ without an id or a known type cannot be answered)."""
    cfg = w.config
    sender = s.from_
    to = s.to
    if not sender or not to:
        w.count("dropped.malformed")
        return
    proxy = cfg.proxy_domain
    if to != proxy and not to.startswith(proxy + "/") and domain_of(to) != proxy:
        w.count("dropped.not_for_us")
        return
    target = cfg.target
    # _jid.of_account(sender, target), spelled out: this runs for every stanza.
    from_target = sender.startswith(target) and (
        len(sender) == len(target) or sender[len(target)] == "/"
    )
    kind = s.kind
    if kind == "iq":
        iq_type = s.type
        if s.id is None:
            w.count("dropped.malformed")
        elif iq_type in ("get", "set"):
            if not from_target:
                accept(w, s, sender, size)
            elif resource_of(to) is None:
                refuse(w, s, BAD_REQUEST, "refused.target_to_bare")
            else:
                call(w, s)
        elif iq_type in ("result", "error"):
            if from_target:
                reply(w, s, sender, size)
            else:
                call_answered(w, s, sender, size)
        else:
            w.count("dropped.malformed")
    elif kind == "presence":
        if from_target and to == proxy:
            target_presence(w, s, sender)
        elif from_target:
            w.count("ignored.presence_to_resource")
        else:
            refuse(w, s, BAD_REQUEST, "refused.presence")
    elif kind == "message":
        if from_target and resource_of(to) is None:
            refuse(w, s, BAD_REQUEST, "refused.message")
        elif from_target:
            message_from_target(w, s, sender)
        else:
            message_to_target(w, s, sender)
    else:
        w.count("dropped.malformed")
