"""Between ElementTree stanzas (what slixmpp parses) and the core's :class:`Stanza` values.

The payload is the tuple of the stanza's child elements, the very objects the parser made: they
are handed to the core and back and appended to the outgoing element as they are, so a payload
is never reparsed or rebuilt (only written out once, on send).
"""

from __future__ import annotations

from typing import Final
from xml.etree.ElementTree import Element, SubElement

from client_proxy.core import Stanza, StanzaError

__all__ = ["STANZAS_NS", "from_element", "to_element"]

#: RFC 6120 §8.3.3: the namespace of the defined conditions and of `<text/>`.
STANZAS_NS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"
_ROUTING = frozenset({"type", "id", "from", "to"})
_KINDS: Final = ("iq", "message", "presence")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def from_element(xml: Element) -> Stanza | None:
    """The core's view of a stanza element, or None if it is not iq, message or presence."""
    kind = _local(xml.tag)
    if kind not in _KINDS:
        return None
    attrib = xml.attrib
    payload = tuple(xml)
    error: StanzaError | None = None
    priority: str | None = None
    stype = attrib.get("type")
    if stype == "error":
        error = _error_summary(payload)
    if kind == "presence":
        for child in payload:
            if _local(child.tag) == "priority":
                priority = child.text or ""
                break
    extra = tuple((k, v) for k, v in attrib.items() if k not in _ROUTING)
    return Stanza(
        kind,  # type: ignore[arg-type]  # checked against _KINDS above
        stype,
        attrib.get("id"),
        attrib.get("from"),
        attrib.get("to"),
        payload,
        error,
        priority,
        extra,
    )


def _error_summary(payload: tuple[Element, ...]) -> StanzaError | None:
    for child in payload:
        if _local(child.tag) != "error":
            continue
        condition = ""
        text: str | None = None
        for part in child:
            if not part.tag.startswith("{" + STANZAS_NS + "}"):
                continue
            name = _local(part.tag)
            if name == "text":
                text = part.text
            elif not condition:
                condition = name
        return StanzaError(child.get("type", ""), condition, text)
    return None


def to_element(stanza: Stanza, namespace: str) -> Element:
    """An element for ``stanza`` in the stream's ``namespace`` (`jabber:component:accept`)."""
    el = Element(f"{{{namespace}}}{stanza.kind}")
    attrib = el.attrib
    if stanza.type is not None:
        attrib["type"] = stanza.type
    if stanza.id is not None:
        attrib["id"] = stanza.id
    if stanza.from_ is not None:
        attrib["from"] = stanza.from_
    if stanza.to is not None:
        attrib["to"] = stanza.to
    for name, value in stanza.extra:
        attrib[name] = value
    payload = stanza.payload
    children: tuple[Element, ...] = payload if isinstance(payload, tuple) else ()
    el.extend(children)
    err = stanza.error
    if err is not None and not any(_local(c.tag) == "error" for c in children):
        error = SubElement(el, f"{{{namespace}}}error", {"type": err.type})
        SubElement(error, f"{{{STANZAS_NS}}}{err.condition}")
        if err.text:
            SubElement(error, f"{{{STANZAS_NS}}}text").text = err.text
    return el
