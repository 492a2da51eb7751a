"""The simulation's codec: its wire :class:`Element` to the core's :class:`Stanza` and back.

This is the whole of what a transport must translate, and all of it is mechanical: the routing
attributes (RFC 6120 §8.1) become fields, every other attribute rides in ``extra`` in order, and
the children become the opaque ``payload``, handed back untouched. Two fields are summaries the
core reads: ``error`` (the `<error/>` child's type and condition, RFC 6120 §8.3) and
``priority`` (a presence's `<priority/>`, RFC 6121 §4.7.2.3). On the way out, an error the core
built itself has an empty payload, so the codec renders its `<error/>` child.
"""

from __future__ import annotations

from client_proxy.core import Stanza, StanzaError, StanzaKind

from ._xml import STANZAS_NS, Element, error_element

__all__ = ["from_core", "read_error", "to_core"]

_KINDS: dict[str, StanzaKind] = {"iq": "iq", "message": "message", "presence": "presence"}
# The attributes that are fields of Stanza; `xmlns` is the stream's default namespace, which a
# component stream does not carry on stanzas (XEP-0114 §3; Prosody strips it before sending).
_FIELDS = frozenset({"type", "id", "to", "from", "xmlns"})


def to_core(element: Element) -> Stanza | None:
    """The core's view of ``element``, or None if it is not a stanza (RFC 6120 §8: only
    message, presence and iq are)."""
    kind = _KINDS.get(element.name)
    if kind is None:
        return None
    error = read_error(element) if element.get("type") == "error" else None
    priority: str | None = None
    if kind == "presence":
        child = element.child("priority")
        priority = None if child is None else child.text()
    return Stanza(
        kind,
        element.get("type"),
        element.get("id"),
        element.get("from"),
        element.get("to"),
        element.children,
        error,
        priority,
        tuple((k, v) for k, v in element.attrs if k not in _FIELDS),
    )


def read_error(element: Element) -> StanzaError | None:
    """A summary of ``element``'s `<error/>` child, unchecked (the network may send anything):
    its type, its defined condition (RFC 6120 §8.3.3; `undefined-condition` when there is none)
    and its text."""
    error = element.child("error")
    if error is None:
        return None
    condition = "undefined-condition"
    text: str | None = None
    for child in error.elements:
        if child.get("xmlns") != STANZAS_NS:
            continue
        if child.name == "text":
            text = child.text()
        elif condition == "undefined-condition":
            condition = child.name
    return StanzaError(error.get("type") or "", condition, text)


def from_core(stanza: Stanza) -> Element:
    """The element to put on the wire for ``stanza``, a value the core asked to send."""
    children = _children(stanza.payload)
    if stanza.error is not None and not any(
        isinstance(c, Element) and c.name == "error" for c in children
    ):
        e = stanza.error
        children = (*children, error_element(e.type, e.condition, e.text))
    if stanza.priority is not None and not any(
        isinstance(c, Element) and c.name == "priority" for c in children
    ):
        children = (*children, Element("priority", (), (stanza.priority,)))
    attrs = tuple(
        (k, v)
        for k, v in (
            ("type", stanza.type),
            ("id", stanza.id),
            ("to", stanza.to),
            ("from", stanza.from_),
        )
        if v is not None
    )
    return Element(stanza.kind, attrs + stanza.extra, children)


def _children(payload: object) -> tuple[Element | str, ...]:
    """The payload as children. Only this codec fills payloads, so anything else is a misuse
    (for example a Stanza built by hand with a payload of another transport)."""
    if not isinstance(payload, tuple):
        raise TypeError(f"not a payload of the simulation's codec: {payload!r}")
    for child in payload:
        if not isinstance(child, Element | str):
            raise TypeError(f"not a payload of the simulation's codec: {payload!r}")
    return payload
