"""Outputs: what the core asks its transport to do, as data.

The core proposes, the transport disposes: it sends each :class:`SendStanza` in order, turns
each :class:`LogRecord` into a log line, adds each :class:`CountMetric` to its counters, ends the
stream on :class:`Stopped` and opens a fresh one on :class:`Reconnect`. ``Transition.deadline``
is when to call back with :class:`~client_proxy.core.TimePassed` (None: no timer needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

from ._stanzas import Stanza

if TYPE_CHECKING:
    from ._state import ProxyState

__all__ = [
    "CountMetric",
    "LogLevel",
    "LogRecord",
    "Output",
    "Reconnect",
    "SendStanza",
    "Stopped",
    "Transition",
]

LogLevel = Literal["debug", "info", "warning", "error"]


class SendStanza(NamedTuple):
    """Send ``stanza`` on the component stream, exactly as given."""

    stanza: Stanza


class LogRecord(NamedTuple):
    """Something an operator should see. ``code`` is a stable, greppable name for the event."""

    level: LogLevel
    code: str
    message: str


class CountMetric(NamedTuple):
    """Add one to the counter ``name`` (for example ``dropped.reply_unmatched``)."""

    name: str


class Stopped(NamedTuple):
    """Every request has been answered after :class:`StopRequested`: the transport ends the
    stream (and tells the core with :class:`~client_proxy.core.EndOfStreamSent`), then exits once
    the stream is gone, unless the core asks for a :class:`Reconnect`."""


class Reconnect(NamedTuple):
    """After :class:`Stopped`: the core holds answers that came due after the stream ended (or
    while it was down). Open a fresh stream; at its :class:`~client_proxy.core.ConnectionUp` the
    core sends them, and the transport then ends that stream as after :class:`Stopped`."""


# Outputs are NamedTuples rather than frozen dataclasses for the reason given at the end of
# ``_stanzas``: two are built for every proxied request.
Output = SendStanza | LogRecord | CountMetric | Stopped | Reconnect


class Transition(NamedTuple):
    """The result of one :func:`step`: the next state, the outputs in order, the next deadline."""

    state: ProxyState
    outputs: tuple[Output, ...]
    deadline: float | None
