"""The simulation's transport: drives client_proxy.core exactly as a real component adapter does.

This is the worked example of docs/embedding.md. Everything a transport owes the core is here,
in a few lines each:

- one :class:`~client_proxy.core.ProxyState`, replaced by each step's new state;
- every input becomes one event with ``now`` from the (virtual) clock: the stream authenticated
  (:class:`ConnectionUp`), a stanza arrived (:class:`StanzaReceived`, after the codec), the stream
  is gone (:class:`ConnectionLost`), the operator asked to stop (:class:`StopRequested`), the
  timer fired (:class:`TimePassed`);
- the outputs are carried out in order: stanzas sent on the stream (after the codec), log records
  and counters kept, and on :class:`Stopped` the stream is closed;
- one timer, always set to the latest ``Transition.deadline`` (or cancelled when it is None),
  which fires at or after it.

Nothing in it decides anything about the protocol: that is the core's job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from client_proxy.core import (
    ConnectionLost,
    ConnectionUp,
    CountMetric,
    Event,
    LogRecord,
    ProxyConfig,
    ProxyState,
    SendStanza,
    StanzaReceived,
    Stopped,
    StopRequested,
    TimePassed,
    initial_state,
    step,
)

from ._clock import Clock
from ._codec import from_core, to_core
from ._server import ComponentEndpoint, ComponentLink
from ._xml import Element

__all__ = ["CoreTransport", "ProxyEndpoint", "TransportFactory"]


class ProxyEndpoint(ComponentEndpoint, Protocol):
    """What a run needs from the proxy at the component's end of the stream, beyond being a
    :class:`~client_proxy.sim.ComponentEndpoint`: a way to stop it, and what it did."""

    stopped: bool
    unsendable: list[Element]
    logs: list[LogRecord]
    counters: Counter[str]

    def stop(self, drain: float) -> None: ...

    @property
    def online(self) -> frozenset[str]: ...


class CoreTransport:
    """A component endpoint for :class:`~client_proxy.sim.SimServer` that runs the core."""

    def __init__(self, config: ProxyConfig, seed: int, clock: Clock, timer_lag: float = 0.0):
        self.clock = clock
        self.state: ProxyState = initial_state(config, seed)
        self.timer_lag = timer_lag
        self.link: ComponentLink | None = None
        self.stopped = False
        self.logs: list[LogRecord] = []
        self.counters: Counter[str] = Counter()
        #: Stanzas the core asked to send while the stream was down: a real transport cannot
        #: send them either, so they are dropped, and kept here for the properties to report.
        self.unsendable: list[Element] = []
        self._timer: float | None = None

    # -- the server's side (ComponentEndpoint) --------------------------------------------------

    def connected(self, link: ComponentLink) -> None:
        self.link = link
        self._apply(ConnectionUp(self.clock.now))

    def disconnected(self) -> None:
        self.link = None
        self._apply(ConnectionLost(self.clock.now))

    def received(self, stanza: Element) -> None:
        core_stanza = to_core(stanza)
        if core_stanza is None:
            self.counters["transport.not_a_stanza"] += 1
            return
        self._apply(StanzaReceived(self.clock.now, core_stanza))

    # -- the operator's side -------------------------------------------------------------------

    def stop(self, drain: float) -> None:
        self._apply(StopRequested(self.clock.now, drain))

    @property
    def online(self) -> frozenset[str]:
        """The proxy's view: the target's resources it believes online."""
        return frozenset(self.state.session.online)

    # -- the loop ------------------------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        transition = step(self.state, event)
        self.state = transition.state
        for output in transition.outputs:
            if isinstance(output, SendStanza):
                stanza = from_core(output.stanza)
                if self.link is None:
                    self.unsendable.append(stanza)
                else:
                    self.link.send(stanza)
            elif isinstance(output, LogRecord):
                self.logs.append(output)
            elif isinstance(output, CountMetric):
                self.counters[output.name] += 1
            elif isinstance(output, Stopped):
                self.stopped = True
                if self.link is not None:
                    link, self.link = self.link, None
                    link.close()
        self._set_timer(transition.deadline)

    def _set_timer(self, deadline: float | None) -> None:
        # One timer: the latest deadline replaces any earlier one (a superseded callback finds
        # `_timer` changed and does nothing).
        if deadline == self._timer:
            return
        self._timer = deadline
        if deadline is not None:
            self.clock.call_at(deadline + self.timer_lag, lambda: self._fire(deadline))

    def _fire(self, deadline: float) -> None:
        if self._timer != deadline:
            return
        self._timer = None
        self._apply(TimePassed(self.clock.now))


#: Builds the component endpoint of a run: (config, seed, clock, timer lag) -> endpoint. Swap it
#: to run the whole-system properties against another transport of the core.
TransportFactory = Callable[[ProxyConfig, int, Clock, float], ProxyEndpoint]
