"""The shell's stanza writer (codec.to_text): what it writes parses back to the same stanza.

Stanzas are parsed from a component stream the way slixmpp parses them (ElementTree), turned into
core stanzas, written with to_text, parsed again, and compared in canonical form (C14N 2.0) with
what came in; the payload elements are written as they are, never rebuilt.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from client_proxy.core import Stanza, StanzaError
from client_proxy.shell import codec
from client_proxy.shell.codec import from_element, size_of, to_element, to_text
from hypothesis import given
from hypothesis import strategies as st

NS = "jabber:component:accept"
STREAM_OPEN = f"<stream:stream xmlns='{NS}' xmlns:stream='http://etherx.jabber.org/streams'>"


def parse(text: str) -> ET.Element:
    """The first stanza of a component stream carrying ``text``."""
    root = ET.fromstring(STREAM_OPEN + text + "</stream:stream>")
    return root[0]


def canonical(element: ET.Element) -> str:
    return ET.canonicalize(ET.tostring(element, encoding="unicode"))


STANZAS = [
    "<iq type='get' id='1' from='a@b/c' to='proxy.example.org'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<iq type='result' id='x&amp;y&lt;z' from='svc@example.org/a' "
    "to='proxy.example.org/user@example.org/&quot;q&apos;'/>",
    "<iq type='set' id='2' to='p' xml:lang='de'><query xmlns='urn:example:echo'>"
    "<text>a &amp; b &lt; c &gt; d \"'</text>\n  <deep xmlns='urn:other'><x y='1&#10;2&#9;3'/>"
    "tail &amp; more</deep></query></iq>",
    "<iq type='get' id='3' to='p'><q xmlns='urn:a' xmlns:f='urn:foreign' f:attr='v' plain='w'>"
    "<f:child/></q></iq>",
    "<iq type='error' id='4' to='p'><ping xmlns='urn:xmpp:ping'/><error type='cancel'>"
    "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
    "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone</text></error></iq>",
    "<presence from='svc@example.org/a' to='p'><priority>5</priority>"
    "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/></presence>",
    "<message type='chat' to='p' id='m'><body>h\u00e9llo \U0001f600 ]]&gt;</body></message>",
    "<iq type='get' id='5' to='p'><nons xmlns=''><inner/></nons></iq>",
]


@pytest.mark.parametrize("text", STANZAS)
def test_written_stanza_parses_back_unchanged(text: str) -> None:
    element = parse(text)
    stanza = from_element(element)
    assert stanza is not None
    assert canonical(parse(to_text(stanza, NS))) == canonical(element)


@pytest.mark.parametrize("text", STANZAS)
def test_text_and_element_writers_agree(text: str) -> None:
    stanza = from_element(parse(text))
    assert stanza is not None
    assert canonical(parse(to_text(stanza, NS))) == canonical(to_element(stanza, NS))


def test_core_error_is_rendered_when_the_payload_has_none() -> None:
    stanza = Stanza(
        "iq",
        "error",
        "7",
        "proxy.example.org",
        "a@b/c",
        error=StanzaError("wait", "remote-server-timeout", "no reply <in> time & more"),
    )
    written = parse(to_text(stanza, NS))
    assert canonical(written) == canonical(to_element(stanza, NS))
    error = written.find(f"{{{NS}}}error")
    assert error is not None
    assert error.get("type") == "wait"
    conditions = [child.tag for child in error]
    assert conditions == [
        "{urn:ietf:params:xml:ns:xmpp-stanzas}remote-server-timeout",
        "{urn:ietf:params:xml:ns:xmpp-stanzas}text",
    ]


_chars = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Co", "Cn")
) | st.sampled_from("&<>'\"\t\n")
_texts = st.text(_chars, max_size=12)
_names = st.sampled_from(["a", "b", "query", "x-y", "n.1"])
_namespaces = st.sampled_from(["", NS, "urn:a", "urn:b&c", "urn:x'y"])


@st.composite
def _elements(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    tag = draw(_names)
    ns = draw(_namespaces)
    el = ET.Element(f"{{{ns}}}{tag}" if ns else tag)
    for key in draw(
        st.lists(st.sampled_from(["k", "id", "{urn:attr}k", "{urn:b&c}z"]), max_size=3)
    ):
        el.set(key, draw(_texts))
    el.text = draw(st.none() | _texts)
    if depth < 3:
        for child in draw(st.lists(_elements(depth + 1), max_size=3)):
            child.tail = draw(st.none() | _texts)
            el.append(child)
    return el


@given(
    payload=st.lists(_elements(), max_size=3),
    ident=_texts,
    sender=_texts,
    lang=st.none() | _texts,
)
def test_any_payload_survives_the_writer(
    payload: list[ET.Element], ident: str, sender: str, lang: str | None
) -> None:
    extra = () if lang is None else (("{http://www.w3.org/XML/1998/namespace}lang", lang),)
    stanza = Stanza("iq", "get", ident, sender, "proxy.example.org", tuple(payload), extra=extra)
    expected = to_element(stanza, NS)
    assert canonical(parse(to_text(stanza, NS))) == canonical(expected)


def test_a_stanza_is_measured_by_what_it_carries() -> None:
    """size_of counts what the byte budget needs: a 100 KB payload is 100 KB, and the measure
    never exceeds the stanza's own text."""
    body = "x" * 100_000
    text = (
        "<iq xmlns='jabber:component:accept' type='set' id='big' from='u@example.org/r' "
        f"to='proxy.example.org'><blob xmlns='urn:example:blob'>{body}</blob></iq>"
    )
    measured = size_of(ET.fromstring(text))
    assert len(body) <= measured <= len(text) + 100  # namespaces are counted once per element
    small = (
        "<iq xmlns='jabber:component:accept' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    assert 0 < size_of(ET.fromstring(small)) <= len(small) + 100


def test_the_writers_memo_of_tags_stays_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer remembers each tag's text; a peer sending ever new tags empties the memo
    rather than growing it, and every stanza is still written right."""
    monkeypatch.setattr(codec, "_TAGS", {})
    monkeypatch.setattr(codec, "_TAGS_MAX", 8)
    for n in range(40):
        text = (
            f"<iq type='get' id='{n}' to='p'><q{n} xmlns='urn:n{n % 3}'><q{n}/><same/>"
            f"<other xmlns='urn:o'><q{n}/></other></q{n}></iq>"
        )
        stanza = from_element(parse(text))
        assert stanza is not None
        assert canonical(parse(to_text(stanza, NS))) == canonical(parse(text))
        assert len(codec._TAGS) <= 8
