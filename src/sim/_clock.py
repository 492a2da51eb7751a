"""Virtual time: a clock with an event queue, and the in-order streams stanzas travel on.

Nothing here reads a real clock. The simulation is one thread running callbacks in (time,
order of scheduling) order, so the same schedule always produces the same run, byte for byte.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._xml import Element

__all__ = ["Clock", "Hop", "RunawaySimulation", "Stream"]


class RunawaySimulation(RuntimeError):
    """The event queue never drained: something keeps scheduling work (a stanza loop)."""


class Clock:
    """Virtual seconds and the callbacks due at them. Ties run in the order they were scheduled."""

    __slots__ = ("_heap", "_order", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = 0

    def call_at(self, at: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``at`` (now, if ``at`` is already past)."""
        self._order += 1
        heapq.heappush(self._heap, (max(at, self.now), self._order, action))

    def call_later(self, delay: float, action: Callable[[], None]) -> None:
        self.call_at(self.now + delay, action)

    def run(self, until: float | None = None, max_callbacks: int = 1_000_000) -> None:
        """Run callbacks in time order until none is left (or the next is after ``until``)."""
        for _ in range(max_callbacks):
            if not self._heap or (until is not None and self._heap[0][0] > until):
                if until is not None and until > self.now:
                    self.now = until
                return
            at, _order, action = heapq.heappop(self._heap)
            self.now = at
            action()
        raise RunawaySimulation(f"more than {max_callbacks} callbacks; stopped at t={self.now:g}")


@dataclass(frozen=True, slots=True)
class Hop:
    """One stanza sent at ``sent`` from one end of a stream, delivered to the other at ``at``."""

    at: float
    src: str
    dst: str
    stanza: Element
    sent: float

    def __str__(self) -> str:
        return f"{self.at:9.3f}  {self.src} -> {self.dst}: {self.stanza}"


#: What travels on a stream: a stanza, or None for the stream's closing tag.
Item = Element | None


class Stream:
    """One direction of one XML stream. What is sent arrives ``latency`` seconds later, and
    always in the order it was sent (RFC 6120 §10.1, in-order processing): streams with
    different latencies reorder stanzas *between* them, never within one."""

    __slots__ = (
        "_clock",
        "_closed",
        "_hops",
        "_last",
        "_pending",
        "_receive",
        "dst",
        "latency",
        "src",
    )

    def __init__(
        self,
        clock: Clock,
        latency: float,
        *,
        src: str,
        dst: str,
        receive: Callable[[Item], None],
        hops: list[Hop],
    ) -> None:
        self._clock = clock
        self._last = clock.now
        self.latency = latency
        self.src = src
        self.dst = dst
        self._receive = receive
        self._hops = hops
        self._pending: deque[tuple[float, Item]] = deque()
        self._closed = False

    def send(self, item: Item) -> None:
        if self._closed:
            return
        at = max(self._clock.now + self.latency, self._last)
        self._last = at
        self._pending.append((self._clock.now, item))
        self._clock.call_at(at, self._deliver_next)

    def _deliver_next(self) -> None:
        if self._closed or not self._pending:
            return
        sent, item = self._pending.popleft()
        if item is not None:
            self._hops.append(Hop(self._clock.now, self.src, self.dst, item, sent))
        self._receive(item)

    @property
    def in_flight(self) -> tuple[Item, ...]:
        """Sent and not delivered yet."""
        return tuple(item for _sent, item in self._pending)

    def cut(self) -> tuple[tuple[float, Item], ...]:
        """Close the stream at once; returns what was in flight, with the time each was sent (it
        will not be delivered)."""
        self._closed = True
        left = tuple(self._pending)
        self._pending.clear()
        return left
