"""client-proxy's pure core: a state machine that proxies IQ requests with Jabber Address
Translation, with no I/O, no clock and no randomness of its own.

Drive it with :func:`step`::

    >>> from client_proxy.core import *
    >>> cfg = ProxyConfig(proxy_domain="proxy.example.org", target="svc@example.org")
    >>> t = step(initial_state(cfg, seed=1), ConnectionUp(now=0.0))
    >>> t.outputs[0].stanza.type, t.outputs[0].stanza.to
    ('subscribe', 'svc@example.org')
    >>> t = step(t.state, StanzaReceived(0.1, Stanza("presence", None, None,
    ...     "svc@example.org/a", "proxy.example.org")))
    >>> t = step(t.state, StanzaReceived(1.0, Stanza("iq", "get", "1234",
    ...     "user@example.org/abc", "proxy.example.org", payload="<query/>")))
    >>> fwd = t.outputs[0].stanza
    >>> fwd.from_, fwd.to, fwd.payload
    ('proxy.example.org/user@example.org/abc', 'svc@example.org/a', '<query/>')
    >>> fwd.id  # the proxy's own: sealed, it carries the requester's id (see _seal)
    '4.12349e3779b9.0.7918.1.a.e1ZREXfyiuu6N/L5'
    >>> t = step(t.state, StanzaReceived(1.2, Stanza("iq", "result", fwd.id,
    ...     "svc@example.org/a", "proxy.example.org/user@example.org/abc")))
    >>> back = t.outputs[0].stanza
    >>> back.from_, back.to, back.id
    ('proxy.example.org', 'user@example.org/abc', '1234')

Events go in (:class:`ConnectionUp`, :class:`ConnectionLost`, :class:`StanzaReceived`,
:class:`TimePassed`, :class:`StopRequested`, :class:`EndOfStreamSent`, :class:`ConfigChanged`);
a :class:`Transition` comes out with the new state, the outputs (:class:`SendStanza`,
:class:`LogRecord`, :class:`CountMetric`, :class:`RequestEnded`, :class:`Stopped`,
:class:`Reconnect`) and the next deadline.
``docs/embedding.md`` tells what a transport must do with them.
"""

from ._config import ROUTING_STRATEGIES, ProxyConfig
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
from ._jat import decode_requester, encode_requester, translation_problem
from ._jid import MAX_PART_BYTES
from ._machine import step
from ._outputs import (
    OUTCOMES,
    CountMetric,
    LogLevel,
    LogRecord,
    Output,
    Reconnect,
    RequestEnded,
    SendStanza,
    Stopped,
    Transition,
)
from ._stanzas import (
    ERROR_CONDITIONS,
    ERROR_TYPES,
    IQ_TYPES,
    PRESENCE_TYPES,
    Stanza,
    StanzaError,
    StanzaKind,
)
from ._state import Link, ProxyState, Session, Subscription, initial_state

# What an embedder needs (docs/embedding.md uses all of it and nothing else): the step, its
# events and outputs, the stanza value, the config, the state as a value to keep and to read
# (its session says whether the link is up and which resources are online), and JAT for
# implementing clients and tests. The rest (the records inside the state, routing, policy) is
# the machine's own and may change with it.
__all__ = [
    "ERROR_CONDITIONS",
    "ERROR_TYPES",
    "IQ_TYPES",
    "MAX_PART_BYTES",
    "OUTCOMES",
    "PRESENCE_TYPES",
    "ROUTING_STRATEGIES",
    "ConfigChanged",
    "ConnectionLost",
    "ConnectionUp",
    "CountMetric",
    "EndOfStreamSent",
    "Event",
    "Link",
    "LogLevel",
    "LogRecord",
    "Output",
    "ProxyConfig",
    "ProxyState",
    "Reconnect",
    "RequestEnded",
    "SendStanza",
    "Session",
    "Stanza",
    "StanzaError",
    "StanzaKind",
    "StanzaReceived",
    "StopRequested",
    "Stopped",
    "Subscription",
    "TimePassed",
    "Transition",
    "decode_requester",
    "encode_requester",
    "initial_state",
    "step",
    "translation_problem",
]
