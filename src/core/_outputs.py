"""Outputs: what the core asks its transport to do, as data.

The core proposes, the transport disposes: it sends each :class:`SendStanza` in order, turns
each :class:`LogRecord` into a log line, adds each :class:`CountMetric` and
:class:`RequestEnded` to its metrics, ends the stream on :class:`Stopped` and opens a fresh one
on :class:`Reconnect`. ``Transition.deadline``
is when to call back with :class:`~client_proxy.core.TimePassed` (None: no timer needed).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, NamedTuple

from ._stanzas import Stanza

if TYPE_CHECKING:
    from ._state import ProxyState

__all__ = [
    "OUTCOMES",
    "CountMetric",
    "LogLevel",
    "LogRecord",
    "Output",
    "Reconnect",
    "RequestEnded",
    "SendStanza",
    "Stopped",
    "Transition",
    "ended",
]

LogLevel = Literal["debug", "info", "warning", "error"]


class SendStanza(NamedTuple):
    """Send ``stanza`` on the component stream, exactly as given.

    ``until`` is set on the requests the proxy sends (a user's request forwarded to the target,
    and the target's own request to a user): the time at which that request is answered with a
    timeout if nothing came back, after which sending it is of no use. While the connection
    cannot take more (the server reads slower than the proxy writes), a transport may hold such
    stanzas back, in their order, behind everything else, and drop those it still holds at
    ``until``; the answers the proxy owes (``until`` None) are never held back, so that they
    go out on time. Everything else is sent in the order given.
    """

    stanza: Stanza
    until: float | None = None


class LogRecord(NamedTuple):
    """Something an operator should see. ``code`` is a stable, greppable name for the event."""

    level: LogLevel
    code: str
    message: str


class CountMetric(NamedTuple):
    """Add one to the counter ``name`` (for example ``dropped.reply_unmatched``)."""

    name: str


class RequestEnded(NamedTuple):
    """An IQ request got its one answer, for the metrics: ``direction`` is "inbound" (a user's
    request to the service) or "outbound" (an IQ a target resource started towards a user);
    ``outcome`` is how it ended, one of :data:`OUTCOMES`; ``duration`` is the seconds from its
    acceptance to its answer, None for a request refused at once."""

    direction: Literal["inbound", "outbound"]
    outcome: str
    duration: float | None


def ended(
    direction: Literal["inbound", "outbound"], outcome: str, since: float, now: float
) -> RequestEnded:
    """The :class:`RequestEnded` of a request accepted at ``since`` and answered at ``now``. Both
    are the core's times, which never run backwards; only infinite clocks (inf - inf) could make
    the difference NaN, reported as 0."""
    duration = now - since
    # tuple.__new__ rather than the NamedTuple's own (a Python function): one per request.
    return tuple.__new__(
        RequestEnded, (direction, outcome, 0.0 if math.isnan(duration) else duration)
    )


#: How a request can end (:attr:`RequestEnded.outcome`). Answered: ``result`` or ``error`` (the
#: other side's answer, relayed), ``timeout``, ``resource_gone`` (its resource went and it could
#: not be sent elsewhere; for an outbound request, nobody is left to take the answer),
#: ``no_resource`` (parked, and none came online in time), ``shutdown`` (the drain ended first).
#: Refused at once, by the names of the ``refused.*`` counters: ``forbidden``, ``rate_limit``,
#: ``shutting_down``, ``untranslatable``, ``duplicate_id``, ``limit_total``,
#: ``limit_requester``, ``limit_bytes``, ``limit_requester_bytes``, ``no_resource``,
#: ``no_eligible_resource``; for outbound requests
#: ``target_initiated`` (``outbound_iq = false``), ``target_to_bare``, ``not_a_user``,
#: ``limit_calls``, ``shutting_down``.
OUTCOMES = frozenset(
    {
        "result",
        "error",
        "timeout",
        "resource_gone",
        "no_resource",
        "shutdown",
        "forbidden",
        "rate_limit",
        "shutting_down",
        "untranslatable",
        "duplicate_id",
        "limit_total",
        "limit_requester",
        "limit_bytes",
        "limit_requester_bytes",
        "no_eligible_resource",
        "target_initiated",
        "target_to_bare",
        "not_a_user",
        "limit_calls",
    }
)


class Stopped(NamedTuple):
    """Every request has been answered after :class:`StopRequested`: the transport ends the
    stream (and tells the core with :class:`~client_proxy.core.EndOfStreamSent`), then exits once
    the stream is gone, unless the core asks for a :class:`Reconnect`. From here on, a reply to
    anything this instance forwarded is owed to nobody: a transport that can tell the next
    process so passes this instance's name in its ``initial_state(settled=...)``, until the
    last deadline has passed (``request_timeout`` from now)."""


class Reconnect(NamedTuple):
    """After :class:`Stopped`: the core holds answers that came due after the stream ended (or
    while it was down). Open a fresh stream; at its :class:`~client_proxy.core.ConnectionUp` the
    core sends them, and the transport then ends that stream as after :class:`Stopped`."""


# Outputs are NamedTuples rather than frozen dataclasses for the reason given at the end of
# ``_stanzas``: two are built for every proxied request.
Output = SendStanza | LogRecord | CountMetric | RequestEnded | Stopped | Reconnect


class Transition(NamedTuple):
    """The result of one :func:`step`: the next state, the outputs in order, the next deadline."""

    state: ProxyState
    outputs: tuple[Output, ...]
    deadline: float | None
