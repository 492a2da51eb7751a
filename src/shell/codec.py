"""Between ElementTree stanzas (what slixmpp parses) and the core's :class:`Stanza` values.

The payload is the tuple of the stanza's child elements, the very objects the parser made: they
are handed to the core and back and written out as they are, so a payload is never reparsed or
rebuilt (only written out once, on send). :func:`to_text` writes a core stanza straight to the
text that goes on the wire; :func:`to_element` builds the same stanza as an element.
"""

from __future__ import annotations

import re
from typing import Final
from xml.etree.ElementTree import Element, SubElement

from .corelib import Stanza, StanzaError

__all__ = [
    "STANZAS_NS",
    "from_element",
    "read_stanza",
    "size_of",
    "to_element",
    "to_text",
]

#: RFC 6120 §8.3.3: the namespace of the defined conditions and of `<text/>`.
STANZAS_NS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"
#: The namespace bound to the `xml:` prefix (`xml:lang`).
XML_NS: Final = "http://www.w3.org/XML/1998/namespace"
_ROUTING = frozenset({"type", "id", "from", "to"})
_KINDS: Final = ("iq", "message", "presence")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def size_of(xml: Element) -> int:
    """About how many bytes the stanza ``xml`` took on the wire: the text of its names,
    attributes, character data and those of everything inside it (markup and escaping are not
    counted; namespaces once per element). What the core's byte budget counts for it
    (``StanzaReceived.size``), measured from what the parser already made, without serialising
    anything again."""
    size = 0
    for element in xml.iter():
        text = element.text
        tail = element.tail
        size += len(element.tag)
        if text:
            size += len(text)
        if tail:
            size += len(tail)
        attrib = element.attrib
        if attrib:
            for name, value in attrib.items():
                size += len(name) + len(value)
    return size


def from_element(xml: Element) -> Stanza | None:
    """The core's view of a stanza element, or None if it is not iq, message or presence."""
    read = read_stanza(xml)
    return None if read is None else read[0]


def read_stanza(xml: Element) -> tuple[Stanza, int] | None:
    """The core's view of a stanza element and its :func:`size_of`, in one pass (this runs for
    every stanza read), or None if it is not iq, message or presence."""
    tag = xml.tag
    kind = tag.rpartition("}")[2]
    if kind not in _KINDS:
        return None
    attrib = xml.attrib
    payload = tuple(xml)
    size = len(tag) + len(xml.text or "") + len(xml.tail or "")
    for name, value in attrib.items():
        size += len(name) + len(value)
    error: StanzaError | None = None
    priority: str | None = None
    stype = attrib.get("type")
    if payload:
        for child in payload:
            size += size_of(child)
        if stype == "error":
            error = _error_summary(payload)
        if kind == "presence":
            for child in payload:
                if _local(child.tag) == "priority":
                    priority = child.text or ""
                    break
    extra = (
        ()
        if _ROUTING.issuperset(attrib)
        else tuple((k, v) for k, v in attrib.items() if k not in _ROUTING)
    )
    stanza = Stanza(
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
    return stanza, size


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


# -- writing ------------------------------------------------------------------------------------
#
# slixmpp's tostring escapes character by character in Python and drops attributes in
# namespaces it has no prefix for; this writer is what the proxy sends with. The stanza's own
# element is in the stream's default namespace and needs no declaration; a child declares its
# namespace only where it differs from its parent's, as slixmpp does. Attribute values are
# single-quoted.

_ATTR_SPECIAL = re.compile("[&<>'\"\t\n\r]")
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "'": "&apos;",
        '"': "&quot;",
        "\t": "&#9;",
        "\n": "&#10;",
        "\r": "&#13;",
    }
)
_TEXT_SPECIAL = re.compile("[&<>\r]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


_attr_special = _ATTR_SPECIAL.search
_text_special = _TEXT_SPECIAL.search


def _attr(value: str) -> str:
    return value.translate(_ATTR_ESCAPES) if _attr_special(value) else value


def _text(value: str) -> str:
    return value.translate(_TEXT_ESCAPES) if _text_special(value) else value


def _write_attributes(items: object, out: list[str]) -> None:
    declared = 0
    for key, raw in items:  # type: ignore[attr-defined]
        value = raw.translate(_ATTR_ESCAPES) if _attr_special(raw) else raw
        if key[:1] != "{":
            out.append(f" {key}='{value}'")
            continue
        namespace, _, local = key[1:].partition("}")
        if namespace == XML_NS:
            out.append(f" xml:{local}='{value}'")
        else:
            # An attribute in a namespace of its own: declare a prefix for it right here.
            out.append(f" xmlns:ns{declared}='{_attr(namespace)}' ns{declared}:{local}='{value}'")
            declared += 1


# The writer below runs for every stanza sent: it spells out _attr and _text where it can (a
# function call costs more than the check itself) and appends whole pieces rather than parts.


#: A tag's pieces of text, by tag: its namespace, its start in its parent's namespace, its start
#: in another (declaring its own), and its end tag. Payloads repeat a few tags over and over, so
#: splitting and quoting each once saves most of what writing an element costs. Emptied when it
#: holds _TAGS_MAX (a peer can send any number of distinct tags).
_TAGS: dict[str, tuple[str, str, str, str]] = {}
_TAGS_MAX = 4096


def _tag_text(tag: str) -> tuple[str, str, str, str]:
    if tag[:1] == "{":
        namespace, _, name = tag[1:].partition("}")
    else:
        namespace, name = "", tag
    if len(_TAGS) >= _TAGS_MAX:
        _TAGS.clear()
    text = _TAGS[tag] = (namespace, "<" + name, f"<{name} xmlns='{_attr(namespace)}'", f"</{name}>")
    return text


def _write_element(el: Element, parent_ns: str, out: list[str]) -> None:
    tag = el.tag
    if not isinstance(tag, str):  # a comment or processing instruction: not part of a stanza
        if el.tail:
            out.append(_text(el.tail))
        return
    namespace, start, start_declared, end = _TAGS.get(tag) or _tag_text(tag)
    out.append(start if namespace == parent_ns else start_declared)
    attrib = el.attrib
    if attrib:
        _write_attributes(attrib.items(), out)
    text = el.text
    if len(el):
        if text:
            out.append(">" + (text.translate(_TEXT_ESCAPES) if _text_special(text) else text))
        else:
            out.append(">")
        for child in el:
            _write_element(child, namespace, out)
        out.append(end)
    elif text:
        if _text_special(text):
            text = text.translate(_TEXT_ESCAPES)
        out.append(">" + text + end)
    else:
        out.append("/>")
    tail = el.tail
    if tail:
        out.append(tail.translate(_TEXT_ESCAPES) if _text_special(tail) else tail)


def to_text(stanza: Stanza, namespace: str) -> str:
    """The XML text of ``stanza`` as a top-level element of a stream whose default namespace is
    ``namespace`` (`jabber:component:accept`)."""
    # By name, not by unpacking: the core may give its stanzas more fields.
    kind, type_, id_, from_, to = stanza.kind, stanza.type, stanza.id, stanza.from_, stanza.to
    if _attr_special(f"{type_}{id_}{from_}{to}"):
        type_, id_, from_, to = (None if v is None else _attr(v) for v in (type_, id_, from_, to))
    if type_ is not None and id_ is not None and from_ is not None and to is not None:
        head = f"<{kind} type='{type_}' id='{id_}' from='{from_}' to='{to}'"  # nearly all
    else:
        head = "<" + kind
        if type_ is not None:
            head += f" type='{type_}'"
        if id_ is not None:
            head += f" id='{id_}'"
        if from_ is not None:
            head += f" from='{from_}'"
        if to is not None:
            head += f" to='{to}'"
    out = [head]
    if stanza.extra:
        _write_attributes(stanza.extra, out)
    payload = stanza.payload
    err = stanza.error
    if type(payload) is not tuple or not payload:
        if err is None:
            out.append("/>")
            return "".join(out)
        children: tuple[Element, ...] = ()
    else:
        children = payload
        if err is not None and any(_local(c.tag) == "error" for c in children):
            err = None
    out.append(">")
    for child in children:
        _write_element(child, namespace, out)
    if err is not None:
        out.append(f"<error type='{_attr(err.type)}'><{err.condition} xmlns='{STANZAS_NS}'/>")
        if err.text:
            out.append(f"<text xmlns='{STANZAS_NS}'>{_text(err.text)}</text>")
        out.append("</error>")
    out.append(f"</{kind}>")
    return "".join(out)
