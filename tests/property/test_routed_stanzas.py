"""Every stanza a server can route survives the shell: its codec, the daemon's read path, the wire.

The stanzas come from :mod:`client_proxy.testing.wire_stanzas` (any namespaces and prefixes,
nested payloads, attributes in any order, xml:lang, entities, character references, CDATA,
comments, texts up to the largest stanza the servers route, Unicode in every attribute,
routing attributes missing, empty or unknown, elements that are not stanzas). Three levels:

- the codec alone: what the shell reads it writes back as well-formed XML with the same meaning;
- the daemon's read path (the real slixmpp component on a fake transport), fed the stream in
  pieces cut anywhere: nothing escapes, everything written is well-formed, every request is
  answered exactly once, and the payload the requester gets back from the target's echo is the
  payload it sent;
- the wire: the real daemon connected over loopback TCP to a fake XEP-0114 server
  (:mod:`client_proxy.testing.component_server`) that writes the stream in such pieces.

"The same payload" means the same XML: equal in canonical form (C14N 2.0 with prefixes
rewritten, comments left out). Byte for byte, the shell's writer normalises what XML lets a
writer choose: element prefixes become default-namespace declarations (``xmlns='...'``, only
where the namespace changes), prefixed attributes get prefixes of its own (``ns0``, ``ns1``...),
declarations nothing uses are dropped, every attribute value is single-quoted, whitespace inside
tags is one space, ``<a></a>`` becomes ``<a/>``, character references, entities and CDATA
sections become characters (``&``, ``<``, ``>`` written as entities, and in attribute values also
quotes, tab, newline and carriage return; a carriage return in text as ``&#13;``), and comments
are dropped (RFC 6120 §11.1 forbids them in stanzas). Attribute order, text, whitespace between
elements and every character are kept. What the writer wrote it writes again byte for byte.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

from client_proxy.core import Link, TimePassed
from client_proxy.shell.codec import from_element, read_stanza, size_of, to_text
from client_proxy.shell.config import parse_settings
from client_proxy.shell.daemon import Daemon
from client_proxy.testing.component_server import ComponentServer
from client_proxy.testing.fake_stream import FakeTransport, feed
from client_proxy.testing.wire_stanzas import (
    COMPONENT_NS,
    RoutedStanza,
    chunkings,
    routed_stanzas,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROXY = "proxy.example.org"
TARGET = "svc@example.org"
STREAMS = "http://etherx.jabber.org/streams"
OPEN = f"<stream:stream xmlns='{COMPONENT_NS}' xmlns:stream='{STREAMS}'>"
HEADER = f"<?xml version='1.0'?><stream:stream xmlns='{COMPONENT_NS}' xmlns:stream='{STREAMS}' "
ONLINE = (
    f"<presence type='subscribed' from='{TARGET}' to='{PROXY}'/>"
    f"<presence from='{TARGET}/a' to='{PROXY}'/>"
)

_PROFILE = settings()
#: The read path and the wire take many stanzas per example: a quarter of the profile's count.
_FEWER = settings(
    max_examples=max(10, _PROFILE.max_examples // 4),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

stanza_lists = st.lists(routed_stanzas(proxy=PROXY, target=TARGET), min_size=1, max_size=8)


def _parse_stream(text: str) -> list[ET.Element]:
    return list(ET.fromstring(OPEN + text + "</stream:stream>"))


def canonical(children: Any) -> str:
    """The children's meaning: C14N 2.0, prefixes rewritten, comments out."""
    text = "".join(ET.tostring(c, encoding="unicode") for c in children)
    return ET.canonicalize(f"<w>{text}</w>", rewrite_prefixes=True, strip_text=False)


def _domain(jid: str) -> str:
    return jid.partition("/")[0].rpartition("@")[2]


def owed_answer(element: ET.Element) -> tuple[str, str] | None:
    """The (requester, id) a proxy for PROXY serving TARGET owes an answer for ``element``."""
    if element.tag != f"{{{COMPONENT_NS}}}iq" or element.get("type") not in ("get", "set"):
        return None
    sender, to, iq_id = element.get("from"), element.get("to"), element.get("id")
    if not sender or not to or iq_id is None:
        return None
    if sender == TARGET or sender.startswith(TARGET + "/"):
        return None
    if to != PROXY and not to.startswith(PROXY + "/") and _domain(to) != PROXY:
        return None
    return sender, iq_id


# -- the codec ----------------------------------------------------------------------------------


@given(routed_stanzas(proxy=PROXY, target=TARGET))
def test_the_codec_reads_and_writes_every_routed_stanza(routed: RoutedStanza) -> None:
    (element,) = _parse_stream(routed.text)
    stanza = from_element(element)
    if routed.kind is None and not element.tag.startswith(f"{{{COMPONENT_NS}}}"):
        return  # not a stanza of this stream: the daemon hands it to slixmpp
    assert stanza is not None or routed.kind is None
    if stanza is None:
        assert read_stanza(element) is None
        return
    # What the daemon reads: the same stanza, and the size the byte budget counts.
    assert read_stanza(element) == (stanza, size_of(element))
    assert routed.attrs == {
        k: v
        for k, v in (
            ("type", stanza.type),
            ("id", stanza.id),
            ("from", stanza.from_),
            ("to", stanza.to),
        )
        if v is not None
    }
    written = to_text(stanza, COMPONENT_NS)
    (back,) = _parse_stream(written)  # well-formed, one element
    assert back.tag == element.tag
    assert dict(back.attrib) == dict(element.attrib)
    assert canonical(back) == canonical(element)
    again = from_element(back)
    assert again is not None
    assert to_text(again, COMPONENT_NS) == written  # the writer's form is a fixed point


# -- the daemon's read path ---------------------------------------------------------------------


def daemon_settings(port: int = 9) -> Any:
    return parse_settings(
        {
            "component": PROXY,
            "server": f"127.0.0.1:{port}",
            "secret": "s",
            "target": TARGET,
            "seed": 1,
            "rate_limit": 0,
        }
    )


def echo_of(forward: ET.Element) -> str | None:
    """The target's answer to a forwarded request: a result carrying the same payload. Only an
    IQ is answered (found by the long profile: a message of type `get` echoed as a result with
    no id was, rightly, taken by the proxy as the answer to a request whose id is empty)."""
    to = forward.get("to") or ""
    if (
        forward.tag != f"{{{COMPONENT_NS}}}iq"
        or forward.get("type") not in ("get", "set")
        or not to.startswith(TARGET + "/")
    ):
        return None
    # ElementTree writes every namespaced element with a prefix and the rest unprefixed; the
    # stream's default namespace is undeclared on the iq so that a child in none stays in none.
    echo = ET.Element(f"{{{COMPONENT_NS}}}iq", {"type": "result", "id": forward.get("id") or ""})
    echo.set("from", to)
    echo.set("to", forward.get("from") or "")
    echo.extend(list(forward))
    text = ET.tostring(echo, encoding="unicode")
    return text.replace("<ns0:iq ", "<ns0:iq xmlns='' ", 1)


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace("'", "&apos;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def is_iq_answer(element: ET.Element) -> bool:
    """An IQ result or error (not an error presence or message, which may carry the same id)."""
    return element.tag == f"{{{COMPONENT_NS}}}iq" and element.get("type") in ("result", "error")


def check_answers(sent: list[ET.Element], written: list[ET.Element]) -> int:
    """Every request in ``sent`` answered exactly once among ``written``; a result carries the
    request's payload. The number of requests."""
    owed = Counter(key for key in map(owed_answer, sent) if key is not None)
    payloads = {owed_answer(e): canonical(e) for e in sent if owed_answer(e) is not None}
    answers: Counter[tuple[str, str]] = Counter()
    for out in written:
        key = (out.get("to") or "", out.get("id") or "")
        if is_iq_answer(out) and key in owed:
            answers[key] += 1
            if out.get("type") == "result" and owed[key] == 1:
                assert canonical(out) == payloads[key], key
    assert answers == owed
    return sum(owed.values())


@_FEWER
@given(stanzas=stanza_lists, data=st.data())
def test_the_read_path_answers_every_request_once_with_its_payload(
    stanzas: list[RoutedStanza], data: st.DataObject
) -> None:
    async def main() -> None:
        daemon = Daemon(daemon_settings(), asyncio.get_running_loop())
        xmpp: Any = daemon.xmpp
        transport = FakeTransport()
        xmpp.connection_made(transport)
        feed(xmpp, HEADER + "id='s1'>" + "<handshake/>" + ONLINE)
        assert daemon.state.session.link is Link.UP
        transport.writes.clear()

        stream = "".join(r.text for r in stanzas).encode()
        for piece in data.draw(chunkings(stream), label="pieces"):
            feed(xmpp, piece)
        # The target answers each forward with its payload; what is left times out.
        for forward in _parse_stream(transport.text()):
            echo = echo_of(forward)
            if echo is not None:
                feed(xmpp, echo)
        daemon.apply(TimePassed(asyncio.get_running_loop().time() + 86_400))

        written = _parse_stream(transport.text())  # well-formed, all of it
        check_answers(_parse_stream("".join(r.text for r in stanzas)), written)

    asyncio.run(main())


# -- the wire -----------------------------------------------------------------------------------


@_FEWER
@given(stanzas=stanza_lists, data=st.data())
def test_the_daemon_on_the_wire_answers_every_request_once(
    stanzas: list[RoutedStanza], data: st.DataObject
) -> None:
    stream = "".join(r.text for r in stanzas).encode()
    pieces = data.draw(chunkings(stream), label="pieces")
    sent = _parse_stream("".join(r.text for r in stanzas))
    owed = sum(owed_answer(e) is not None for e in sent)

    async def main() -> None:
        server = ComponentServer(PROXY, "s")
        port = await server.start()
        daemon = Daemon(daemon_settings(port), asyncio.get_running_loop())
        try:
            daemon.start()
            await asyncio.wait_for(server.authenticated.wait(), 10)
            await server.wait_for(1)  # the proxy's subscribe
            await server.write([ONLINE.encode()])
            while daemon.state.session.link is not Link.UP or not daemon.state.session.online:
                await asyncio.sleep(0.001)
            seen = len(server.stanzas)
            await server.write(pieces)
            # Answer forwards as they come, until every request has had an answer; once
            # nothing moves, let the deadlines pass (a request parked for a resource that a
            # drawn presence took away).
            keys = {owed_answer(e) for e in sent}
            loop = asyncio.get_running_loop()
            give_up = loop.time() + 20
            quiet_since, timed_out = loop.time(), False
            while True:
                await asyncio.sleep(0.005)
                if len(server.stanzas) > seen:
                    quiet_since = loop.time()
                for forward in server.stanzas[seen:]:
                    echo = echo_of(forward)
                    if echo is not None:
                        await server.write([echo.encode()])
                seen = len(server.stanzas)
                answered = sum(
                    is_iq_answer(out) and (out.get("to") or "", out.get("id") or "") in keys
                    for out in server.stanzas
                )
                if answered >= owed:
                    break
                assert loop.time() < give_up, f"{answered} of {owed} requests answered"
                if not timed_out and loop.time() - quiet_since > 0.2:
                    daemon.apply(TimePassed(loop.time() + 86_400))
                    timed_out = True
            await asyncio.sleep(0.01)  # a duplicate would arrive now
            check_answers(sent, server.stanzas)
        finally:
            daemon.request_stop()
            await server.close()
            daemon.xmpp.abort()

    asyncio.run(main())
