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
    >>> fwd.from_, fwd.to, fwd.id, fwd.payload
    ('proxy.example.org/user@example.org/abc', 'svc@example.org/a', '1234', '<query/>')
    >>> t = step(t.state, StanzaReceived(1.2, Stanza("iq", "result", "1234",
    ...     "svc@example.org/a", "proxy.example.org/user@example.org/abc")))
    >>> back = t.outputs[0].stanza
    >>> back.from_, back.to, back.id
    ('proxy.example.org', 'user@example.org/abc', '1234')

Events go in (:class:`ConnectionUp`, :class:`ConnectionLost`, :class:`StanzaReceived`,
:class:`TimePassed`, :class:`StopRequested`); a :class:`Transition` comes out with the new state,
the outputs (:class:`SendStanza`, :class:`LogRecord`, :class:`CountMetric`, :class:`Stopped`) and
the next deadline. ``docs/embedding.md`` tells what a transport must do with them.
"""

from ._config import ROUTING_STRATEGIES, ProxyConfig
from ._events import (
    ConnectionLost,
    ConnectionUp,
    Event,
    StanzaReceived,
    StopRequested,
    TimePassed,
)
from ._jat import decode_requester, encode_requester, translation_problem
from ._jid import MAX_PART_BYTES, bare, domain_of, resource_of
from ._machine import step
from ._outputs import CountMetric, LogLevel, LogRecord, Output, SendStanza, Stopped, Transition
from ._policy import listed, rate_check
from ._routing import next_random, pick, rendezvous_score
from ._stanzas import (
    ERROR_CONDITIONS,
    ERROR_TYPES,
    IQ_TYPES,
    PRESENCE_TYPES,
    Stanza,
    StanzaError,
    StanzaKind,
)
from ._state import (
    MAX_RESOURCES,
    Call,
    LateReply,
    Link,
    MessageRoute,
    Outstanding,
    ProxyState,
    QueueEntry,
    RequestKey,
    Subscription,
    TargetResource,
    initial_state,
    queue_key,
    queue_seq,
)

__all__ = [
    "ERROR_CONDITIONS",
    "ERROR_TYPES",
    "IQ_TYPES",
    "MAX_PART_BYTES",
    "MAX_RESOURCES",
    "PRESENCE_TYPES",
    "ROUTING_STRATEGIES",
    "Call",
    "ConnectionLost",
    "ConnectionUp",
    "CountMetric",
    "Event",
    "LateReply",
    "Link",
    "LogLevel",
    "LogRecord",
    "MessageRoute",
    "Output",
    "Outstanding",
    "ProxyConfig",
    "ProxyState",
    "QueueEntry",
    "RequestKey",
    "SendStanza",
    "Stanza",
    "StanzaError",
    "StanzaKind",
    "StanzaReceived",
    "StopRequested",
    "Stopped",
    "Subscription",
    "TargetResource",
    "TimePassed",
    "Transition",
    "bare",
    "decode_requester",
    "domain_of",
    "encode_requester",
    "initial_state",
    "listed",
    "next_random",
    "pick",
    "queue_key",
    "queue_seq",
    "rate_check",
    "rendezvous_score",
    "resource_of",
    "step",
    "translation_problem",
]
