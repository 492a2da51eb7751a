"""The proxy's state: one immutable value, updated by :func:`~client_proxy.core.step` alone.

Collections that grow with traffic are persistent hash maps (`immutables.Map`, a HAMT): an
update shares all but O(log n) of the old map, so a step costs the same with ten requests
outstanding as with a hundred thousand, and an old state stays valid after the step (a test can
keep every state it saw). Small collections (the target's resources) are sorted tuples, whose
order is part of what makes the seeded choice deterministic across processes.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from immutables import Map

from ._config import ProxyConfig
from ._stanzas import Stanza

__all__ = [
    "MAX_RESOURCES",
    "Call",
    "LateReply",
    "Link",
    "MessageRoute",
    "Outstanding",
    "ProxyState",
    "QueueEntry",
    "RequestKey",
    "Subscription",
    "TargetResource",
    "initial_state",
    "queue_key",
    "queue_seq",
]

_EMPTY: Map[object, object] = Map()

#: The most target resources tracked at once; presence beyond it is ignored and logged.
MAX_RESOURCES = 1024

#: A request is known by its requester's full JID and its id (RFC 6120 §8.2.3: the id is chosen
#: by the requester, so it is only unique per requester).
RequestKey = tuple[str, str]

#: What waits for a deadline, in the single queue: ``("in", requester, id)`` for a request to
#: the service (:class:`Outstanding`), ``("call", user, proxy_id)`` for an IQ the target started
#: (:class:`Call`), ``("msg", user, id)`` for a message's way back (:class:`MessageRoute`).
QueueEntry = tuple[str, str, str]


def queue_key(seq: int) -> int:
    """The key of sequence number ``seq`` in ``ProxyState.queue``: its bits 0-4 moved to 15-19
    and bits 5-19 to 0-14 (a permutation, so distinct numbers keep distinct keys). The map is a
    HAMT that picks a branch with the lowest 5 bits of the hash first (an int's hash is the int),
    so plain numbers would scatter consecutive entries over the whole tree; with this key, 32
    consecutive numbers share one leaf, and the entries being added and removed stay on one
    warm path however large the queue grows (`./just bench-core`: the slowdown from 10 to
    100,000 outstanding went from 1.40-1.51x to 1.36-1.37x)."""
    return ((seq >> 5) & 0x7FFF) | ((seq & 31) << 15) | (seq >> 20 << 20)


def queue_seq(key: int) -> int:
    """The sequence number whose :func:`queue_key` is ``key``."""
    return ((key >> 15) & 31) | ((key & 0x7FFF) << 5) | (key >> 20 << 20)


class Link(enum.Enum):
    """Whether the component stream to the server is up."""

    DOWN = "down"
    UP = "up"


class Subscription(enum.Enum):
    """The proxy's subscription to the target's presence, as far as this connection has seen."""

    NONE = "none"  #: not asked yet on this connection, or refused/revoked by the target
    REQUESTED = "requested"  #: `subscribe` sent, `subscribed` not seen yet
    #: still no `subscribed` ``sync_grace`` seconds after asking: the operator has been told
    UNANSWERED = "unanswered"
    APPROVED = "approved"  #: `subscribed` seen; the `probe` has been sent


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
    comes from). ``resource`` is the target resource that has it, or None while it waits for the
    resync after a (re)connect. ``tried`` lists every resource it was sent to. ``skip`` counts
    the late replies its resource still owes for earlier requests with the same requester and
    id (see :class:`LateReply`): that many replies from it are dropped before its own.
    """

    seq: int
    request: Stanza
    deadline: float
    resource: str | None
    tried: tuple[str, ...] = ()
    skip: int = 0


class Call(NamedTuple):
    """An IQ a target resource started towards a user, still owed one answer.

    ``request`` is the stanza as the resource sent it (its ``from_`` is where the answer goes,
    its ``id`` the id the answer carries); ``user`` is who it went to, with the proxy's own id.
    """

    seq: int
    request: Stanza
    deadline: float
    user: str


class LateReply(NamedTuple):
    """Replies the proxy no longer wants: ``resource`` (a name) still holds ``owed`` requests
    with this requester and id that timed out, and may yet answer them. Ids pass unchanged, so
    such a late answer would look exactly like the answer to a new request with the same
    requester and id. The next ``owed`` replies from ``resource`` for this key are dropped; a new
    request with the key is kept away from ``resource`` if another one can take it, else it
    takes the count along (:attr:`Outstanding.skip`). Remembered until ``resource`` answers or
    goes offline: a late answer can come any time later (the whole-system properties found
    that a fixed horizon lets it through). At most ``max_outstanding`` are kept (the oldest, by
    ``seq``, is forgotten first)."""

    seq: int
    resource: str
    owed: int = 1


class MessageRoute(NamedTuple):
    """Where an error bounced for a message from the target to a user goes: back to
    ``resource`` (a full JID), until ``deadline``."""

    seq: int
    deadline: float
    resource: str


class ProxyState(NamedTuple):
    """Everything the proxy knows. Build the first one with :func:`initial_state`.

    Like the other records of the state, a NamedTuple: as immutable as a frozen dataclass, and
    several times cheaper to build, which matters for a value built on every step (see the note
    at the end of ``_stanzas``).

    ``requests`` maps (requester, id) to its :class:`Outstanding`. ``queue`` maps each accepted
    request's sequence number (as :func:`queue_key`; :func:`queue_seq` turns it back) to its
    key: every request gets the same timeout and time never runs backwards here, so acceptance
    order is deadline order, and the entry of ``head`` (after skipping numbers already answered)
    is the next request to expire. ``per_requester`` counts
    outstanding requests per requester for the per-requester limit.

    ``lates`` remembers which resource still holds requests that timed out (see
    :class:`LateReply`). ``calls`` and ``routes`` hold what the target
    started towards users (IQs owed an answer,
    messages whose error may come back); they share ``queue`` (same timeout, same order).
    ``load`` counts requests per resource (kept for `least-outstanding` routing only), ``turn``
    is `round-robin`'s counter, ``rates`` the rate limit's per-requester TAT (see
    ``_policy``), swept at ``sweep_at``.

    ``held`` keeps answers produced while the link was down, sent as soon as it is up again.
    ``synced`` turns true once the target's presence has said, since the last connect,
    whether any resource is online; until then, and for at most ``sync_grace``
    (``sync_until``), a request that finds no resource is parked rather than refused.
    """

    config: ProxyConfig
    rng: int
    now: float = float("-inf")
    link: Link = Link.DOWN
    subscription: Subscription = Subscription.NONE
    resources: tuple[TargetResource, ...] = ()
    requests: Map[RequestKey, Outstanding] = _EMPTY  # type: ignore[assignment]
    queue: Map[int, QueueEntry] = _EMPTY  # type: ignore[assignment]
    head: int = 0
    next_seq: int = 0
    per_requester: Map[str, int] = _EMPTY  # type: ignore[assignment]
    parked: tuple[RequestKey, ...] = ()
    sync_until: float = float("-inf")
    synced: bool = False
    held: tuple[Stanza, ...] = ()
    stop_at: float | None = None
    stopped: bool = False
    calls: Map[tuple[str, str], Call] = _EMPTY  # type: ignore[assignment]
    routes: Map[tuple[str, str], MessageRoute] = _EMPTY  # type: ignore[assignment]
    lates: Map[RequestKey, LateReply] = _EMPTY  # type: ignore[assignment]
    load: Map[str, int] = _EMPTY  # type: ignore[assignment]
    turn: int = 0
    rates: Map[str, float] = _EMPTY  # type: ignore[assignment]
    sweep_at: float = float("inf")
    #: The last transition's deadline (inf: none), a cache of what finish() computed: a step
    #: before it has nothing to expire, and skips looking.
    due: float = float("-inf")

    @property
    def online(self) -> tuple[str, ...]:
        """Names of the target's online resources, sorted."""
        return tuple(r.name for r in self.resources)


def initial_state(config: ProxyConfig, seed: int = 0) -> ProxyState:
    """The state before the first event: disconnected, nothing known, ``seed`` for the choice."""
    return ProxyState(config=config, rng=seed & ((1 << 64) - 1))
