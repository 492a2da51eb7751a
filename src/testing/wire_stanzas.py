"""Hypothesis strategies for stanzas as text, the way a server may route them to a component.

:mod:`client_proxy.testing.strategies` draws the core's :class:`~client_proxy.core.Stanza`
values; this module draws what comes before them: the XML text on the component stream, for a
transport's parser and codec to read. Everything drawn is well-formed XML (XML 1.0 with
namespaces) that a server could put on a XEP-0114 stream:

- any namespaces, on elements by default declaration (``xmlns='...'``), by prefix
  (``xmlns:p='...'``), undeclared again (``xmlns=''``), or inherited; prefixed and ``xml:``
  attributes (``xml:lang``); declarations that nothing uses;
- attributes in any order, quoted with ``'`` or ``"``, with any whitespace around ``=``;
- text and attribute values with any XML character (any plane of Unicode, C1 controls, tab,
  newline, carriage return), written literally, as the five predefined entities, or as decimal
  or hexadecimal character references; CDATA sections; comments;
- nested payloads (several levels, mixed content), empty elements as ``<a/>`` or ``<a></a>``;
- the routing attributes (``type``, ``id``, ``from``, ``to``) missing, empty, unknown or holding
  any Unicode, and texts up to the largest stanza the servers route by default (Prosody 0.12's
  c2s limit is 256 KiB; ejabberd's ``max_stanza_size`` is 64 KiB on c2s by default);
- top-level elements that are not stanzas (other names, or ``iq`` in another namespace).

Processing instructions and DTDs are left out: XML forbids a DTD inside a document, and RFC 6120
§11.1 forbids processing instructions on an XMPP stream, so a server never routes either.

:func:`routed_stanzas` draws :class:`RoutedStanza` values: the text, and what a reader of it must
find (kind, routing attributes, whether the core should take it as a request). Standard library
and Hypothesis only::

    from client_proxy.testing.wire_stanzas import routed_stanzas

    @given(routed_stanzas(proxy="proxy.example.org", target="svc@example.org"))
    def test_my_reader(routed):
        my_transport.feed(routed.text.encode())
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

__all__ = [
    "COMPONENT_NS",
    "LARGEST_STANZA",
    "RoutedStanza",
    "chunkings",
    "payload_texts",
    "routed_stanzas",
    "xml_text_chars",
]

#: The default namespace of a component stream (XEP-0114).
COMPONENT_NS = "jabber:component:accept"
#: The largest stanza drawn: Prosody 0.12's default c2s stanza size limit (256 KiB).
LARGEST_STANZA = 256 * 1024

_STANZA_KINDS = ("iq", "message", "presence")

#: Characters XML 1.0 allows in text and attribute values (§2.2, Char): tab, newline, carriage
#: return, and everything from U+0020 but surrogates and U+FFFE/U+FFFF.
xml_text_chars = st.one_of(
    st.sampled_from("\t\n\r"),
    st.sampled_from("&<>'\"]"),  # the characters that need care, often
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0x20, exclude_categories=["Cs"], exclude_characters="\ufffe\uffff"),
)

_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_éжΩ中"
_NAME_REST = _NAME_START + "0123456789-.·"

#: Namespaces a payload may use: real XMPP ones, the stream's own, the stanza error namespace
#: (which the codec reads), Unicode, and characters that must be escaped in an attribute.
_NAMESPACES = (
    "urn:example:a",
    "urn:example:b",
    "http://jabber.org/protocol/disco#info",
    "jabber:client",
    COMPONENT_NS,
    "urn:ietf:params:xml:ns:xmpp-stanzas",
    "urn:xmpp:ping",
    "urn:x:ünïcødé:中文",
    "urn:x:a&b<c>'\"",
)
_XML_NS = "http://www.w3.org/XML/1998/namespace"


def _ncnames() -> st.SearchStrategy[str]:
    return st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(_NAME_START),
        st.text(st.sampled_from(_NAME_REST), max_size=6),
    ).filter(lambda name: not name.lower().startswith("xml"))


def _escape_char(char: str, mode: int, quote: str | None) -> str:
    """One character as text or inside an attribute quoted with ``quote``."""
    if mode == 1:
        return f"&#{ord(char)};"
    if mode == 2:
        return f"&#x{ord(char):X};"
    named = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;"}
    if char in named and (mode == 3 or char in "&<>" or char == quote):
        return named[char]
    if char == "\r" and quote is None:
        # A literal CR is read as LF (XML §2.11); keep the drawn text's meaning in both forms.
        return "&#13;"
    if quote is not None and char in "\t\n\r":
        # Attribute-value normalisation (XML §3.3.3) reads these as spaces; references keep them.
        return f"&#{ord(char)};"
    return char


@st.composite
def _escaped(draw: st.DrawFn, quote: str | None, max_size: int = 12) -> str:
    chars = draw(st.text(xml_text_chars, max_size=max_size))
    modes = draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 3]), min_size=len(chars)))
    return "".join(_escape_char(c, m, quote) for c, m in zip(chars, modes, strict=False))


def _attribute_value(quote: str) -> st.SearchStrategy[str]:
    return _escaped(quote)


@st.composite
def _big_text(draw: st.DrawFn) -> str:
    """Text of up to :data:`LARGEST_STANZA` octets: one drawn piece repeated."""
    piece = draw(st.text(xml_text_chars, min_size=1, max_size=8))
    size = draw(st.integers(1, LARGEST_STANZA - 4096))
    written = "".join(_escape_char(c, 0, None) for c in piece)
    return written * max(1, size // len(written.encode()))


@st.composite
def _cdata(draw: st.DrawFn) -> str:
    body = draw(st.text(xml_text_chars, max_size=12).filter(lambda t: "]]>" not in t))
    return f"<![CDATA[{body.replace(chr(13), '')}]]>"


@st.composite
def _comment(draw: st.DrawFn) -> str:
    body = draw(st.text(xml_text_chars, max_size=8))
    body = body.replace("--", "- -").replace("\r", "")
    if body.endswith("-"):
        body += " "
    return f"<!--{body}-->"


_SPACE = st.sampled_from([" ", " ", " ", "\n", "\t", "  ", "\r\n "])


@st.composite
def _attributes(
    draw: st.DrawFn, element_prefixes: dict[str, str], reserved: frozenset[str] = frozenset()
) -> tuple[str, list[str]]:
    """Attributes in any order: ``(text, extra namespace declarations)``; unprefixed names in
    ``reserved`` are left out."""
    names = draw(st.lists(_ncnames().filter(lambda n: n not in reserved), max_size=4, unique=True))
    parts: list[str] = []
    declared: list[str] = []
    used: set[tuple[str, str]] = set()
    for i, local in enumerate(names):
        quote = draw(st.sampled_from(["'", '"']))
        how = draw(st.sampled_from(["plain", "plain", "prefixed", "lang"]))
        if how == "prefixed":
            namespace = draw(st.sampled_from(_NAMESPACES))
            prefix = f"a{i}"
            declared.append(f"xmlns:{prefix}={quote}{_attr_escape(namespace, quote)}{quote}")
            name, key = f"{prefix}:{local}", (namespace, local)
        elif how == "lang":
            name, key = "xml:lang", (_XML_NS, "lang")
        else:
            name, key = local, ("", local)
        if key in used:
            continue
        used.add(key)
        value = draw(_attribute_value(quote))
        space = draw(_SPACE)
        eq = draw(st.sampled_from(["=", "=", " = ", "\n=\t"]))
        parts.append(f"{space}{name}{eq}{quote}{value}{quote}")
    del element_prefixes
    return "".join(parts), declared


def _attr_escape(value: str, quote: str) -> str:
    out = value.replace("&", "&amp;").replace("<", "&lt;")
    return out.replace(quote, "&apos;" if quote == "'" else "&quot;")


@st.composite
def _element(draw: st.DrawFn, depth: int, prefixes: dict[str, str]) -> str:
    local = draw(_ncnames())
    quote = draw(st.sampled_from(["'", '"']))
    how = draw(st.sampled_from(["inherit", "default", "default", "prefix", "undeclare"]))
    decls: list[str] = []
    scope = dict(prefixes)
    tag = local
    if how == "default":
        namespace = draw(st.sampled_from(_NAMESPACES))
        decls.append(f"xmlns={quote}{_attr_escape(namespace, quote)}{quote}")
    elif how == "undeclare":
        decls.append(f"xmlns={quote}{quote}")
    elif how == "prefix":
        namespace = draw(st.sampled_from(_NAMESPACES))
        prefix = draw(st.sampled_from(["p", "q", "ns0", "stream", "x中"]))
        decls.append(f"xmlns:{prefix}={quote}{_attr_escape(namespace, quote)}{quote}")
        scope[prefix] = namespace
        tag = f"{prefix}:{local}"
    elif bool(scope) and draw(st.booleans()):
        tag = f"{draw(st.sampled_from(sorted(scope)))}:{local}"  # a prefix bound above
    attributes, attr_decls = draw(_attributes(scope))
    head = " ".join([tag, *decls, *attr_decls]) + attributes
    content = draw(_content(depth, scope))
    if content or draw(st.booleans()):
        return f"<{head}{draw(st.sampled_from(['', ' ', chr(10)]))}>{content}</{tag}>"
    return f"<{head}{draw(st.sampled_from(['', ' ']))}/>"


@st.composite
def _content(draw: st.DrawFn, depth: int, prefixes: dict[str, str]) -> str:
    kinds = ["text", "cdata", "comment"] + (["element", "element"] if depth > 0 else [])
    parts = draw(st.lists(st.sampled_from(kinds), max_size=4))
    out: list[str] = []
    for kind in parts:
        if kind == "text":
            out.append(draw(_escaped(None)))
        elif kind == "cdata":
            out.append(draw(_cdata()))
        elif kind == "comment":
            out.append(draw(_comment()))
        else:
            out.append(draw(_element(depth - 1, prefixes)))
    return "".join(out)


def payload_texts(max_depth: int = 3) -> st.SearchStrategy[str]:
    """The children of a stanza, as text: nested elements, text, CDATA, comments; now and then
    one text as large as the largest stanza the servers route."""
    return st.one_of(
        _content(max_depth, {}),
        st.builds(
            lambda a, big: f"<big xmlns='urn:example:big'>{big}</big>{a}",
            _content(1, {}),
            _big_text(),
        ),
    )


@dataclass(frozen=True)
class RoutedStanza:
    """One top-level element of a component stream, as drawn.

    ``text`` is what goes on the wire. ``kind`` is ``iq``, ``message`` or ``presence`` for a
    stanza of the stream's namespace, None for anything else. ``attrs`` holds the routing
    attributes as a reader must find them (after XML's unescaping; absent ones left out).
    ``payload`` is the children's text as written. ``is_request`` says whether a proxy for
    ``proxy`` serving ``target`` must take it as an IQ request it owes exactly one answer to.
    """

    text: str
    kind: str | None
    attrs: dict[str, str]
    payload: str
    is_request: bool


def _routing_values(
    proxy: str, target: str, requesters: tuple[str, ...]
) -> dict[str, st.SearchStrategy[str | None]]:
    anything = st.text(xml_text_chars, max_size=16)
    return {
        "type": st.one_of(
            st.none(),
            st.sampled_from(["get", "set", "get", "set", "result", "error", "chat", "normal"]),
            st.sampled_from(["", "unavailable", "subscribed", "probe", "GET", "bogus"]),
            anything,
        ),
        "id": st.one_of(st.none(), st.just(""), anything),
        "from": st.one_of(
            st.sampled_from(requesters),
            st.sampled_from(requesters),
            st.sampled_from([f"{target}/a", f"{target}/b", target]),
            st.none(),
            st.just(""),
            anything,
        ),
        "to": st.one_of(
            st.just(proxy),
            st.just(proxy),
            st.builds(lambda r: f"{proxy}/{r}", anything),
            st.sampled_from([None, "", "other.example.org", f"{target}/a"]),
            anything,
        ),
    }


def _raw_attr(value: str) -> str:
    return "".join(_escape_char(c, 0, "'") for c in value)


@st.composite
def routed_stanzas(
    draw: st.DrawFn,
    *,
    proxy: str = "proxy.example.org",
    target: str = "svc@example.org",
    requesters: tuple[str, ...] = ("user@example.org/u", "ünï@例え.jp/リソース 1", "a@b"),
    ids: st.SearchStrategy[str] | None = None,
) -> RoutedStanza:
    """One top-level element of a component stream for the proxy ``proxy`` serving ``target``.

    ``ids``, if given, draws the id of every request (a test that matches answers to requests
    can make them unique); other stanzas keep drawing any id.
    """
    what = draw(st.sampled_from(["request", "request", "stanza", "stanza", "other"]))
    values = _routing_values(proxy, target, requesters)
    attrs: dict[str, str] = {}
    if what == "request":
        kind = "iq"
        attrs["type"] = draw(st.sampled_from(["get", "set"]))
        attrs["id"] = draw(ids if ids is not None else st.text(xml_text_chars, max_size=16))
        attrs["from"] = draw(st.sampled_from(requesters))
        attrs["to"] = draw(
            st.one_of(st.just(proxy), st.builds(lambda r: f"{proxy}/{r}", st.text(max_size=8)))
        )
        attrs["to"] = "".join(c for c in attrs["to"] if c.isprintable()) or proxy
    else:
        kind = draw(st.sampled_from(_STANZA_KINDS))
        for name in ("type", "id", "from", "to"):
            value = draw(values[name])
            if value is not None:
                attrs[name] = value
    payload = draw(payload_texts())
    if what == "other":
        name = draw(st.one_of(_ncnames(), st.sampled_from(_STANZA_KINDS)))
        namespace = draw(st.sampled_from(["urn:example:a", "jabber:client", "jabber:server"]))
        text = f"<{name} xmlns='{_attr_escape(namespace, chr(39))}'>{payload}</{name}>"
        return RoutedStanza(text, None, attrs, payload, False)
    pieces = [f" {k}='{_raw_attr(v)}'" for k, v in attrs.items()]
    order = draw(st.permutations(range(len(pieces))))
    extra, decls = draw(_attributes({}, reserved=frozenset({"type", "id", "from", "to"})))
    # The routing attributes in any order, among others (xml:lang, prefixed, unknown).
    at = draw(st.integers(0, len(pieces)))
    ordered = [pieces[i] for i in order]
    head = "".join([*ordered[:at], extra, *ordered[at:]]) + "".join(f" {d}" for d in decls)
    tag = kind
    if draw(st.integers(0, 9)) == 0:
        # The stream's namespace by a prefix of its own: the same element to a reader.
        tag = f"c:{kind}"
        head = f" xmlns:c='{COMPONENT_NS}'" + head
    if payload or draw(st.booleans()):
        text = f"<{tag}{head}>{payload}</{tag}>"
    else:
        text = f"<{tag}{head}/>"
    is_request = (
        what == "request"
        and not attrs["from"].startswith(target)
        and (attrs["to"] == proxy or attrs["to"].startswith(proxy + "/"))
    )
    return RoutedStanza(text, kind, attrs, payload, is_request)


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into pieces at any offsets: mid-tag, mid-reference, mid-character of a
    multi-byte UTF-8 sequence."""
    if not data:
        return st.just([])
    cuts = st.lists(st.integers(1, max(1, len(data) - 1)), max_size=12, unique=True)
    return cuts.map(
        lambda points: [
            data[a:b]
            for a, b in zip([0, *sorted(points)], [*sorted(points), len(data)], strict=True)
            if a < b
        ]
    )
