"""The slixmpp shell's codec passes the conformance kit's round trip: core stanzas built
from the kit's strategies (requester JIDs a server would stamp, translated addresses, any ids)
are written by the shell (codec.to_text), read back as the shell reads the stream (ElementTree,
then codec.from_element), and come out with every attribute and the payload unchanged."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from client_proxy.core import Stanza, encode_requester
from client_proxy.shell.codec import from_element, to_text
from client_proxy.testing.strategies import EXAMPLE_PROXY, requester_jids
from hypothesis import given
from hypothesis import strategies as st

NS = "jabber:component:accept"
STREAM = f"<stream:stream xmlns='{NS}' xmlns:stream='http://etherx.jabber.org/streams'>"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# XML 1.0 text: no controls but tab, newline, carriage return (which attribute values keep
# only as character references), no surrogates, no U+FFFE/U+FFFF.
_xml_text = st.text(
    st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="\ufffe\uffff",
        min_codepoint=0x20,
    ),
    max_size=12,
)


def _payload(texts: list[str]) -> tuple[ET.Element, ...]:
    children = []
    for i, text in enumerate(texts):
        el = ET.Element(f"{{urn:example:{i}}}query", {"n": text})
        ET.SubElement(el, f"{{urn:example:{i}}}text").text = text
        children.append(el)
    return tuple(children)


def _canonical(payload: object) -> list[str]:
    assert isinstance(payload, tuple)
    return [ET.canonicalize(ET.tostring(el, encoding="unicode")) for el in payload]


@given(
    requester=requester_jids(),
    kind=st.sampled_from(["iq", "message", "presence"]),
    stype=st.one_of(st.none(), st.sampled_from(["get", "set", "result", "chat", "probe"])),
    ident=st.one_of(st.none(), _xml_text),
    inbound=st.booleans(),
    lang=st.one_of(st.none(), st.sampled_from(["en", "de-CH", "zh-Hant"])),
    texts=st.lists(_xml_text, max_size=3),
)
def test_kit_stanzas_survive_the_shell_codec(
    *,
    requester: str,
    kind: str,
    stype: str | None,
    ident: str | None,
    inbound: bool,
    lang: str | None,
    texts: list[str],
) -> None:
    translated = encode_requester(EXAMPLE_PROXY, requester)
    sender, to = (requester, EXAMPLE_PROXY) if inbound else (translated, "svc@example.org/a")
    extra = () if lang is None else ((XML_LANG, lang),)
    stanza = Stanza(kind, stype, ident, sender, to, _payload(texts), extra=extra)  # type: ignore[arg-type]

    back = from_element(ET.fromstring(STREAM + to_text(stanza, NS) + "</stream:stream>")[0])

    assert back is not None
    assert (back.kind, back.type, back.id, back.from_, back.to) == (
        stanza.kind,
        stanza.type,
        stanza.id,
        stanza.from_,
        stanza.to,
    )
    assert back.extra == stanza.extra
    assert _canonical(back.payload) == _canonical(stanza.payload)
