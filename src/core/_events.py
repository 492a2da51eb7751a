"""Events: everything that can happen to the proxy, as input to :func:`step`.

Each event carries ``now``, a monotonic time in seconds chosen by the transport. The core never
reads a clock; a ``now`` earlier than one already seen is treated as the latest seen, so a
misbehaving clock can delay deadlines but never reorder them.

:class:`ConnectionUp`, :class:`StanzaReceived` and :class:`TimePassed` may also carry ``wall``,
the wall-clock time (seconds since the Unix epoch) at the same instant. Deadlines are kept in
``now``'s terms; ``wall`` only turns them into the wall-clock deadlines that sealed ids carry
(``_seal``), which another process, with another monotonic clock, must be able to check. A
transport that never gives it gets ``now`` as the wall clock: enough for one process, not for
a restart or a standby.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._config import ProxyConfig
from ._stanzas import Stanza

__all__ = [
    "ConfigChanged",
    "ConnectionLost",
    "ConnectionUp",
    "EndOfStreamSent",
    "Event",
    "StanzaReceived",
    "StopRequested",
    "TimePassed",
]


@dataclass(frozen=True, slots=True)
class ConnectionUp:
    """The component stream is authenticated (XEP-0114 §3): stanzas can flow both ways."""

    now: float
    wall: float | None = None


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The component stream is gone. Requests stay outstanding until their deadlines."""

    now: float


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    """The server routed ``stanza`` to the component; ``size`` is its size in bytes as read
    (0 if the transport does not measure it), which the byte budget counts while the proxy holds
    it (``max_outstanding_bytes``)."""

    now: float
    stanza: Stanza
    size: int = 0
    wall: float | None = None


@dataclass(frozen=True, slots=True)
class TimePassed:
    """Time moved on; the transport sends this at (or after) the deadline it was last given."""

    now: float
    wall: float | None = None


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """The operator changed the settings (a reload): ``config`` applies from now on, except a
    change of target, which is refused (logged as ``config.rejected``). See ``_reload``."""

    now: float
    config: ProxyConfig


@dataclass(frozen=True, slots=True)
class EndOfStreamSent:
    """After :class:`~client_proxy.core.Stopped`, the transport has written the proxy's end of
    stream (RFC 6120 §4.4). Stanzas the server routed before it read it may still arrive, until
    :class:`ConnectionLost`; the core holds their answers for a fresh stream."""

    now: float


@dataclass(frozen=True, slots=True)
class StopRequested:
    """Shut down: refuse new requests, wait up to ``drain`` seconds for outstanding replies, then
    answer what is left with an error and emit :class:`~client_proxy.core.Stopped`."""

    now: float
    drain: float = 0.0


Event = (
    ConnectionUp
    | ConnectionLost
    | StanzaReceived
    | TimePassed
    | StopRequested
    | EndOfStreamSent
    | ConfigChanged
)
