"""Outputs: what the core asks its transport to do, as data.

The core proposes, the transport disposes: it sends each :class:`SendStanza` in order, turns each
:class:`LogRecord` into a log line, adds each :class:`CountMetric` to its counters, and when it
sees :class:`Stopped` it disconnects. ``Transition.deadline`` is when to call back with
:class:`~client_proxy.core.TimePassed` (None: no timer needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from ._stanzas import Stanza

if TYPE_CHECKING:
    from ._state import ProxyState

__all__ = ["CountMetric", "LogLevel", "LogRecord", "Output", "SendStanza", "Stopped", "Transition"]

LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class SendStanza:
    """Send ``stanza`` on the component stream, exactly as given."""

    stanza: Stanza


@dataclass(frozen=True, slots=True)
class LogRecord:
    """Something an operator should see. ``code`` is a stable, greppable name for the event."""

    level: LogLevel
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CountMetric:
    """Add one to the counter ``name`` (for example ``dropped.reply_unknown``)."""

    name: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """Every request has been answered after :class:`StopRequested`: the transport may close."""


Output = SendStanza | LogRecord | CountMetric | Stopped


class Transition(NamedTuple):
    """The result of one :func:`step`: the next state, the outputs in order, the next deadline."""

    state: ProxyState
    outputs: tuple[Output, ...]
    deadline: float | None
