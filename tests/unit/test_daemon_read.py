"""The daemon's read path: bytes from the socket to stanzas for the core, answers back out.

The component connection is the real slixmpp one with a fake transport: the event loop hands it
what it reads the way a buffered protocol gets it (get_buffer, then buffer_updated), in pieces
of any size. The stream header starts the handshake, the server's handshake reply brings the
session up, and from there every stanza is the daemon's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from client_proxy.core import Link
from client_proxy.core._seal import original_of
from client_proxy.shell import daemon as daemon_module
from client_proxy.shell.config import parse_settings
from client_proxy.shell.daemon import Daemon
from client_proxy.testing.fake_stream import FakeTransport, feed

NS = "jabber:component:accept"
PROXY = "proxy.localhost"
TARGET = "svc@localhost"
USER = "user@localhost/u"
HEADER = (
    f"<?xml version='1.0'?><stream:stream xmlns='{NS}' "
    f"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='{PROXY}'>"
)
ONLINE = (
    f"<presence type='subscribed' from='{TARGET}' to='{PROXY}'/>"
    f"<presence from='{TARGET}/a' to='{PROXY}'/>"
)


async def connected() -> tuple[Daemon, Any, FakeTransport]:
    """A daemon whose component stream is up, with the target online (one resource)."""
    settings = parse_settings(
        {
            "component": PROXY,
            "server": "127.0.0.1:9",
            "secret": "s",
            "target": TARGET,
            "seed": 1,
            "rate_limit": 0,
        }
    )
    daemon = Daemon(settings, asyncio.get_running_loop())
    xmpp: Any = daemon.xmpp
    transport = FakeTransport()
    xmpp.connection_made(transport)
    feed(xmpp, HEADER + "<handshake/>" + ONLINE)
    assert daemon.state.session.link is Link.UP
    transport.writes.clear()
    return daemon, xmpp, transport


def request(iq_id: str) -> str:
    return (
        f"<iq type='get' id='{iq_id}' from='{USER}' to='{PROXY}'>"
        f"<query xmlns='urn:example:q'><item n='{iq_id}'>text &amp; more</item></query></iq>"
    )


def test_the_protocol_reads_into_a_buffer_of_its_own() -> None:
    async def main() -> None:
        _, xmpp, _ = await connected()
        assert isinstance(xmpp, asyncio.BufferedProtocol)
        # The same buffer every time: nothing is allocated per read.
        assert xmpp.get_buffer(-1) is xmpp.get_buffer(-1)
        assert len(xmpp.get_buffer(-1)) >= 64 * 1024

    asyncio.run(main())


@pytest.mark.parametrize("piece", [1, 7, 64, None])
def test_stanzas_in_pieces_of_any_size_are_forwarded_whole(piece: int | None) -> None:
    async def main() -> None:
        _, xmpp, transport = await connected()
        feed(xmpp, request("r1") + request("r2"), piece)
        forwarded = transport.stanzas()
        assert [
            (f.get("type"), original_of(f.get("id") or ""), f.get("to")) for f in forwarded
        ] == [
            ("get", "r1", f"{TARGET}/a"),
            ("get", "r2", f"{TARGET}/a"),
        ]
        for out in forwarded:
            (query,) = list(out)
            assert query.tag == "{urn:example:q}query"
            assert query[0].text == "text & more"

    asyncio.run(main())


def test_what_one_read_brings_is_answered_in_one_write() -> None:
    async def main() -> None:
        _, xmpp, transport = await connected()
        feed(xmpp, "".join(request(f"r{n}") for n in range(5)))
        assert len(transport.writes) == 1
        assert [original_of(f.get("id") or "") for f in transport.stanzas()] == [
            f"r{n}" for n in range(5)
        ]

    asyncio.run(main())


def test_after_the_header_the_parser_reports_element_ends_only() -> None:
    # The read path the daemon takes on this Python (not the start-and-end fallback).
    async def main() -> None:
        _, xmpp, _ = await connected()
        assert xmpp._ends_only is xmpp.parser
        feed(xmpp, "<iq type='get' id='x' from='a@b/c' to='proxy.localhost'><q xmlns='u:q'/>")
        assert [event for event, _ in xmpp.parser._events_queue] == []  # nothing queued left
        assert len(xmpp.xml_root) == 1  # the stanza still being read, and nothing else

    asyncio.run(main())


@pytest.mark.parametrize("piece", [1, 7, None])
def test_without_the_ends_only_parser_stanzas_are_read_the_same(
    piece: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Python whose ElementTree lacks the internals _ends_only needs: the start-and-end path.
    monkeypatch.setattr(daemon_module, "_ends_only", lambda parser: False)

    async def main() -> None:
        _, xmpp, transport = await connected()
        assert xmpp._ends_only is None
        feed(xmpp, request("r1") + request("r2") + "<message from='a@b/c'", piece)
        assert [original_of(f.get("id") or "") for f in transport.stanzas()] == ["r1", "r2"]
        aborted: list[bool] = []
        xmpp.abort = lambda: aborted.append(True)
        feed(xmpp, " to='x'/>" + request("r3") + "</stream:stream>", piece)
        assert [original_of(f.get("id") or "") for f in transport.stanzas()][2:] == ["r3"]
        assert aborted == [True]

    asyncio.run(main())


def test_stanzas_read_before_xml_that_is_not_well_formed_are_answered() -> None:
    async def main() -> None:
        _, xmpp, transport = await connected()
        sent: list[Any] = []
        xmpp.send = sent.append
        xmpp.disconnect = lambda *a, **k: None
        feed(xmpp, request("ok1") + request("ok2") + "<iq type='get' id='x'><unclosed></iq>")
        assert [original_of(f.get("id") or "") for f in transport.stanzas()] == ["ok1", "ok2"]
        (error,) = sent
        assert error["condition"] == "not-well-formed"

    asyncio.run(main())


def test_the_servers_end_of_stream_closes_the_connection() -> None:
    async def main() -> None:
        _, xmpp, transport = await connected()
        aborted: list[bool] = []
        xmpp.abort = lambda: aborted.append(True)
        feed(xmpp, request("last") + "</stream:stream>")
        # What came before the end of stream is still handled.
        assert [original_of(f.get("id") or "") for f in transport.stanzas()] == ["last"]
        assert aborted == [True]
        assert xmpp.disconnect_reason == "End of stream"

    asyncio.run(main())


def test_xml_that_is_not_well_formed_ends_the_stream_with_a_stream_error() -> None:
    async def main() -> None:
        _, xmpp, transport = await connected()
        sent: list[Any] = []
        disconnected: list[bool] = []
        xmpp.send = sent.append
        xmpp.disconnect = lambda *a, **k: disconnected.append(True)
        feed(xmpp, "<iq type='get' id='x'><unclosed></iq>")
        (error,) = sent
        assert error["condition"] == "not-well-formed"
        assert disconnected == [True]
        assert transport.stanzas() == []

    asyncio.run(main())


def test_elements_other_than_stanzas_still_go_to_slixmpp() -> None:
    async def main() -> None:
        _, xmpp, _ = await connected()
        errors: list[Any] = []
        xmpp.add_event_handler("stream_error", errors.append)
        feed(
            xmpp,
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        )
        (error,) = errors
        assert error["condition"] == "conflict"

    asyncio.run(main())
