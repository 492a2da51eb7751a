"""The stanzas the core reads and writes: plain, frozen values with an opaque payload.

The core looks only at a stanza's routing attributes (RFC 6120 §8.1: to, from, id, type) and,
for presence, its priority (RFC 6121 §4.7.2.3). Everything inside the stanza (the payload) is an
opaque value the transport put there; the core hands it back untouched, so a transport never has
to reserialise it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = [
    "ERROR_CONDITIONS",
    "ERROR_TYPES",
    "IQ_TYPES",
    "PRESENCE_TYPES",
    "Stanza",
    "StanzaError",
    "StanzaKind",
    "footprint",
]

StanzaKind = Literal["iq", "message", "presence"]
#: What a transport keeps a stanza's children as (the core never looks inside). A name of its
#: own rather than ``object`` in Stanza's fields: the compiled copy of the core (mypyc, see
#: ``client_proxy.shell.corelib``) resolves a NamedTuple's field types by name, and finds no
#: ``object`` among the module's names.
Payload = object

#: RFC 6120 §8.2.3.
IQ_TYPES = frozenset({"get", "set", "result", "error"})
#: RFC 6121 §4.7.1.3 (None, the absent type, means available).
PRESENCE_TYPES = frozenset(
    {"error", "probe", "subscribe", "subscribed", "unavailable", "unsubscribe", "unsubscribed"}
)
#: RFC 6120 §8.3.2.
ERROR_TYPES = frozenset({"auth", "cancel", "continue", "modify", "wait"})
#: RFC 6120 §8.3.3.
ERROR_CONDITIONS = frozenset(
    {
        "bad-request",
        "conflict",
        "feature-not-implemented",
        "forbidden",
        "gone",
        "internal-server-error",
        "item-not-found",
        "jid-malformed",
        "not-acceptable",
        "not-allowed",
        "not-authorized",
        "policy-violation",
        "recipient-unavailable",
        "redirect",
        "registration-required",
        "remote-server-not-found",
        "remote-server-timeout",
        "resource-constraint",
        "service-unavailable",
        "subscription-required",
        "undefined-condition",
        "unexpected-request",
    }
)


@dataclass(frozen=True, slots=True)
class StanzaError:
    """An `<error/>` element's meaning (RFC 6120 §8.3): its type, defined condition and text.

    Built by the core for the errors it originates (checked here: a misuse raises ValueError),
    and by transports as a summary of an error that arrived (not checked: the network may send
    anything, and the core only reads ``condition``).
    """

    type: str
    condition: str
    text: str | None = None

    @classmethod
    def build(cls, type: str, condition: str, text: str | None = None) -> StanzaError:
        """A checked error for the core to send; raises ValueError naming RFC 6120 §8.3."""
        if type not in ERROR_TYPES:
            raise ValueError(f"error type {type!r} is not one of RFC 6120 §8.3.2")
        if condition not in ERROR_CONDITIONS:
            raise ValueError(f"error condition {condition!r} is not one of RFC 6120 §8.3.3")
        return cls(type, condition, text)


class Stanza(NamedTuple):
    """One XMPP stanza as the core sees it.

    ``kind`` is the element name. ``type``, ``id``, ``from_`` and ``to`` are the attributes as they
    arrived (None when absent). ``payload`` is whatever the transport uses for the children (the
    core never looks inside it; for a relayed error it includes the `<error/>` element).
    ``error`` summarises an error stanza's `<error/>`; a transport renders it as an element only
    when the payload carries none (the core's own errors have an empty payload).
    ``priority`` is a presence's `<priority/>` text, if any. ``extra`` holds any other attributes
    (for example ``xml:lang``) as ``(name, value)`` pairs, passed through unchanged.
    """

    kind: StanzaKind
    type: str | None = None
    id: str | None = None
    from_: str | None = None
    to: str | None = None
    payload: Payload = ()
    error: StanzaError | None = None
    priority: str | None = None
    extra: tuple[tuple[str, str], ...] = ()


# Why Stanza (like the state's records) is a NamedTuple and not a frozen dataclass: both are
# immutable, but a frozen dataclass's __init__ sets each field through object.__setattr__, which
# made building the two stanzas of every proxied request cost about a fifth of a step (measured
# with `just bench-core`: 1.0 us vs 0.4 us for nine fields on CPython 3.11). Use ``_replace``
# to derive a changed copy.


def footprint(s: Stanza, measured: int = 0) -> int:
    """The bytes the proxy counts for holding ``s``: what the transport measured of it (the size
    of the stanza as read, given with :class:`~client_proxy.core.StanzaReceived`), and at least
    the length of its addresses and id, which the core keeps whatever the transport says. The
    core never measures Python objects: its accounting depends on nothing but its input."""
    own = len(s.id or "") + len(s.from_ or "") + len(s.to or "")
    return measured if measured > own else own
