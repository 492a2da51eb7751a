"""The proxy's state: one immutable value between steps, and its working copy during one.

Between steps the state is a :class:`ProxyState`, a value that :func:`~client_proxy.core.step`
alone replaces. Collections that grow with traffic are persistent hash maps (`immutables.Map`, a
HAMT): an update shares all but O(log n) of the old map, so a step costs the same with ten
requests outstanding as with a hundred thousand, and an old state stays valid after the step (a
test can keep every state it saw). Small collections (the target's resources) are sorted tuples,
whose order is part of what makes the seeded choice deterministic across processes.

The state has two parts. :class:`ProxyState`'s own fields are what an ordinary request or reply
touches (the request table, the deadline queue, the choice's generator, the rate limit);
:class:`Session` holds what changes only when the link, the target's presence or a stop does,
and travels by reference from one state to the next until one of those happens.

During a step the machine works on a :class:`Step`: a mutable copy of :class:`ProxyState`'s
fields plus the outputs so far, which the modules of the machine read and update as plain
functions (``accept(w, stanza, requester)``), and which :meth:`Step.close` freezes into the next
state. It lives only inside ``step``; nothing outside the core sees it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import NamedTuple, TypeVar

from immutables import Map

from ._config import ProxyConfig
from ._outputs import CountMetric, LogLevel, LogRecord, Output
from ._stanzas import Stanza

__all__ = [
    "MAX_RESOURCES",
    "Call",
    "Link",
    "MessageRoute",
    "Outstanding",
    "ProxyState",
    "QueueEntry",
    "RequestKey",
    "Session",
    "Step",
    "Subscription",
    "TargetResource",
    "build",
    "initial_state",
]

_T = TypeVar("_T", bound=tuple[object, ...])

#: ``build(cls, fields)`` is ``cls(*fields)`` for a NamedTuple, without its generated
#: ``__new__`` (a Python-level function): about four times cheaper for the records built on
#: every step. Only for field tuples that are complete and in order. Bound directly to
#: tuple.__new__, so that it adds no call of its own.
build: Callable[[type[_T], tuple[object, ...]], _T] = tuple.__new__

_EMPTY: Map[object, object] = Map()

#: The most target resources tracked at once; presence beyond it is ignored and logged.
MAX_RESOURCES = 1024

#: A request is known by its requester's full JID and its id (RFC 6120 §8.2.3: the id is chosen
#: by the requester, so it is only unique per requester).
RequestKey = tuple[str, str]

#: What waits for a deadline, in the single queue (``_queue``): ``("in", requester, id)`` for a
#: request to the service (:class:`Outstanding`), ``("call", user, proxy_id)`` for an IQ the
#: target started (:class:`Call`), ``("msg", user, id)`` for a message's way back
#: (:class:`MessageRoute`).
QueueEntry = tuple[str, str, str]


class Link(enum.Enum):
    """Whether the component stream to the server is up."""

    DOWN = "down"
    UP = "up"
    #: the proxy has ended the stream after a stop; the server may still route to it
    CLOSING = "closing"


class Subscription(enum.Enum):
    """The proxy's subscription to the target's presence, as far as this connection has seen."""

    NONE = "none"  #: not asked yet on this connection, or refused/revoked by the target
    REQUESTED = "requested"  #: `subscribe` sent, `subscribed` not seen yet
    #: still no `subscribed` ``sync_grace`` seconds after asking: the operator has been told
    UNANSWERED = "unanswered"
    APPROVED = "approved"  #: `subscribed` seen; the `probe` has been sent
    #: a resource's presence came while the subscription was asked for (an approval made on the
    #: server brings that and no `subscribed`): in place, but not probed yet, so the presence of
    #: resources that sent none since may be missing; a `subscribed` that follows brings the probe
    ANNOUNCED = "announced"

    @property
    def in_place(self) -> bool:
        """The target has approved the subscription (by `subscribed`, or by its presence)."""
        return self is Subscription.APPROVED or self is Subscription.ANNOUNCED


class TargetResource(NamedTuple):
    """An online resource of the target, with its presence priority (RFC 6121 §4.7.2.3).

    ``eligible``: its name matches ``resource_pattern``. ``failures`` counts the
    `feature-not-implemented`/`service-unavailable` errors it answered in a row; reaching
    ``failure_threshold`` takes it out of rotation until ``cooling_until``.
    """

    name: str
    priority: int = 0
    eligible: bool = True
    failures: int = 0
    cooling_until: float = float("-inf")


class Outstanding(NamedTuple):
    """An accepted request still owed exactly one answer.

    ``request`` is the stanza as the requester sent it (its ``to`` is the address the answer
    comes from). ``since`` is when it was accepted (for the duration its metrics report; the
    deadline alone would not say, once a reload changes ``request_timeout``). ``resource`` is
    the target resource that has it, or None while it waits for the resync after a (re)connect.
    ``tried`` lists every resource it was sent to. ``sent`` is the id its latest forward carried
    (``_seal``: unique per forward; empty while parked): only a reply with exactly that id, from
    that resource, answers it. ``size`` is the bytes counted for it
    against the budget (``_stanzas.footprint``): the whole stanza while its payload is kept for
    a retry, its addresses alone once it cannot be sent again (the payload is then dropped).
    """

    seq: int
    request: Stanza
    since: float
    deadline: float
    resource: str | None
    tried: tuple[str, ...] = ()
    sent: str = ""
    size: int = 0


class Call(NamedTuple):
    """An IQ a target resource started towards a user, still owed one answer.

    ``request`` is the stanza as the resource sent it (its ``from_`` is where the answer goes,
    its ``id`` the id the answer carries); ``user`` is who it went to, with the proxy's own id;
    ``since`` when it was accepted; ``size`` the bytes counted for it (its payload, gone to the
    user, is not kept).
    """

    seq: int
    request: Stanza
    since: float
    deadline: float
    user: str
    size: int = 0


class MessageRoute(NamedTuple):
    """Where an error bounced for a message from the target to a user goes: back to
    ``resource`` (a full JID), from ``since`` until ``deadline``."""

    seq: int
    since: float
    deadline: float
    resource: str


class Session(NamedTuple):
    """What the proxy knows of its link and of the target: it changes when the link comes up or
    goes, when the target's presence says something, and when a stop is asked for; an ordinary
    request or reply leaves it as it is.

    ``synced`` turns true once the target's presence has said, since the last connect, whether
    any resource is online; until then, and for at most ``sync_grace`` (``sync_until``), a
    request that finds no resource is *parked* (its key in ``parked``) rather than refused.
    ``held`` keeps answers produced while the link could not carry them, sent as soon as a
    stream is up again. ``stop_at`` is when the drain ends (None: no stop asked for);
    ``stopped`` turns true when :class:`~client_proxy.core.Stopped` has been emitted, after
    which the transport closes the stream; ``flushes`` counts the fresh streams opened after
    that to deliver answers held since. ``held_bytes`` is what ``held`` counts against the
    byte budget.
    """

    link: Link = Link.DOWN
    subscription: Subscription = Subscription.NONE
    resources: tuple[TargetResource, ...] = ()
    sync_until: float = float("-inf")
    synced: bool = False
    parked: tuple[RequestKey, ...] = ()
    held: tuple[Stanza, ...] = ()
    stop_at: float | None = None
    stopped: bool = False
    flushes: int = 0
    held_bytes: int = 0

    @property
    def online(self) -> tuple[str, ...]:
        """Names of the target's online resources, sorted."""
        return tuple(r.name for r in self.resources)


class ProxyState(NamedTuple):
    """Everything the proxy knows. Build the first one with :func:`initial_state`.

    A NamedTuple, like the other records of the state: as immutable as a frozen dataclass, and
    several times cheaper to build, which matters for a value built on every step (see the note
    at the end of ``_stanzas``). This class is the one place that lists its fields in order.

    ``requests`` maps (requester, id) to its :class:`Outstanding`; ``per_requester`` gives each
    requester's account (bare JID) its (requests, bytes), for the per-requester limits.
    ``bytes_held`` is everything counted against the byte budget: the requests' and calls'
    sizes and the session's ``held_bytes``. ``queue`` (see ``_queue``) orders everything that
    waits for a deadline: requests, ``calls`` (IQs the target started towards users) and
    ``routes`` (messages from the target whose error may come back); ``head`` is the sequence
    number from which to look for the next entry to expire, ``next_seq`` the next to hand out.
    ``seen`` holds the sealed ids of answers this process delivered for requests and calls it did
    not send itself (an earlier process's, or another instance's: ``_recovery``), each until
    the monotonic time its sealed deadline passes, so that a second copy is dropped.
    ``instance`` names this process in the ids it seals (``_seal``), and ``epoch`` is the wall
    clock minus ``now`` as last reported by an event, which turns deadlines into the wall-clock
    time a sealed id carries; ``settled`` names earlier instances that stopped with everything
    answered (see :func:`initial_state`). ``rng`` is the seeded choice's generator
    (``_routing``), ``turn`` `round-robin`'s counter, ``load`` requests per resource (for
    `least-outstanding` only). ``rates`` holds the rate limit's TAT per requester account
    (``_policy``), swept at ``sweep_at``.
    ``due`` is the last transition's deadline (inf: none): a step before it has nothing to
    expire, and skips looking.
    """

    config: ProxyConfig
    rng: int
    now: float = float("-inf")
    requests: Map[RequestKey, Outstanding] = _EMPTY  # type: ignore[assignment]
    per_requester: Map[str, tuple[int, int]] = _EMPTY  # type: ignore[assignment]
    bytes_held: int = 0
    queue: Map[int, QueueEntry] = _EMPTY  # type: ignore[assignment]
    head: int = 0
    next_seq: int = 0
    rates: Map[str, float] = _EMPTY  # type: ignore[assignment]
    sweep_at: float = float("inf")
    turn: int = 0
    load: Map[str, int] = _EMPTY  # type: ignore[assignment]
    seen: Map[str, float] = _EMPTY  # type: ignore[assignment]
    calls: Map[tuple[str, str], Call] = _EMPTY  # type: ignore[assignment]
    routes: Map[tuple[str, str], MessageRoute] = _EMPTY  # type: ignore[assignment]
    session: Session = Session()
    due: float = float("-inf")
    instance: str = "00000000"
    epoch: float = 0.0
    settled: frozenset[str] = frozenset()


def initial_state(
    config: ProxyConfig,
    seed: int = 0,
    instance: int | None = None,
    settled: Iterable[str] = (),
) -> ProxyState:
    """The state before the first event: disconnected, nothing known, ``seed`` for the choice.

    ``instance`` (32 bits) names this process in the ids it seals: every process serving one
    component needs its own, so a transport passes a random one; by default it is drawn from
    ``seed``, which then must differ between processes. ``settled`` names earlier instances
    that stopped after answering everything they forwarded (:class:`Stopped`): a reply to one
    of their forwards is owed to nobody, and is dropped rather than delivered a second time."""
    rng = seed & ((1 << 64) - 1)
    if instance is None:
        # Fibonacci hashing of the seed: distinct seeds give well-spread names, and the
        # choice's generator is left as it was.
        instance = (rng * 0x9E3779B97F4A7C15) >> 32
    return ProxyState(
        config=config,
        rng=rng,
        instance=f"{instance & 0xFFFFFFFF:08x}",
        settled=frozenset(settled),
    )


#: ProxyState's fields in its order, read from a working copy by name (see Step.close).
_fields_of = attrgetter(*ProxyState._fields)


class Step:
    """One step's working copy of a :class:`ProxyState`, and the outputs so far.

    Each field of :class:`ProxyState` is an attribute here, unpacked when the step opens and
    frozen back by :meth:`close`; ``out`` collects the outputs. The functions of the machine's
    modules take it as their first argument (``w``) and update it in place.
    """

    __slots__ = (*ProxyState._fields, "out")

    config: ProxyConfig
    rng: int
    now: float
    requests: Map[RequestKey, Outstanding]
    per_requester: Map[str, tuple[int, int]]
    bytes_held: int
    queue: Map[int, QueueEntry]
    head: int
    next_seq: int
    rates: Map[str, float]
    sweep_at: float
    turn: int
    load: Map[str, int]
    seen: Map[str, float]
    calls: Map[tuple[str, str], Call]
    routes: Map[tuple[str, str], MessageRoute]
    session: Session
    due: float
    instance: str
    epoch: float
    settled: frozenset[str]
    out: list[Output]

    def __init__(self, state: ProxyState, now: float) -> None:
        # One unpacking, in ProxyState's order: a third of the cost of reading 17 fields by name,
        # on every step. A slip in the order fails test_state's round trip at once.
        (
            self.config,
            self.rng,
            then,
            self.requests,
            self.per_requester,
            self.bytes_held,
            self.queue,
            self.head,
            self.next_seq,
            self.rates,
            self.sweep_at,
            self.turn,
            self.load,
            self.seen,
            self.calls,
            self.routes,
            self.session,
            self.due,
            self.instance,
            self.epoch,
            self.settled,
        ) = state
        # Time never runs backwards inside the core (see _events): NaN and the past become `then`.
        self.now = now if now > then else then
        self.out = []

    def close(self) -> ProxyState:
        """The next state: this working copy, frozen (set ``due`` first)."""
        return build(ProxyState, _fields_of(self))

    def log(self, level: LogLevel, code: str, message: str) -> None:
        self.out.append(LogRecord(level, code, message))

    def count(self, name: str) -> None:
        self.out.append(CountMetric(name))
