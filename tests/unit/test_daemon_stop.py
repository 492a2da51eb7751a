"""The daemon's last act on a stop: answers that come due after its end of stream.

XEP-0114 has no way to stop the server routing to a component except closing the stream, so a
request the server routed just before it read our end of stream still arrives after it. The
daemon tells the core when its end of stream is written; the core holds the answer and, once the
old stream is gone, asks for a fresh one, on which the daemon lets it send what it held. A real
server rarely lets this happen (the soak saw it a few times in hundreds of restarts), so it is
driven here by hand: the slixmpp connection is the real one, with its transport, connect and
disconnect replaced.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

from client_proxy.core import Link
from client_proxy.shell.config import parse_settings
from client_proxy.shell.daemon import Daemon

NS = "jabber:component:accept"


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, data: bytes) -> None:
        self.written.append(data.decode())

    def is_closing(self) -> bool:
        return False


def request(iq_id: str) -> ET.Element:
    return ET.fromstring(
        f"<iq xmlns='{NS}' type='get' id='{iq_id}' from='user@localhost/u' "
        "to='proxy.localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    )


def test_answers_due_after_the_end_of_stream_go_out_on_a_fresh_connection() -> None:
    async def main() -> None:
        settings = parse_settings(
            {
                "component": "proxy.localhost",
                "server": "127.0.0.1:9",
                "secret": "s",
                "target": "svc@localhost",
                "drain_timeout": 1,
                "seed": 1,
            }
        )
        daemon = Daemon(settings, asyncio.get_running_loop())
        xmpp: Any = daemon.xmpp
        calls: list[str] = []
        xmpp.connect = lambda *a, **k: calls.append("connect")
        xmpp.disconnect = lambda *a, **k: calls.append("disconnect")
        xmpp.transport = first = FakeTransport()

        daemon._on_session_start(None)
        daemon.request_stop("SIGTERM")  # nothing outstanding: stopped at once
        assert calls == ["disconnect"]

        # slixmpp writes our end of stream, then a request routed just before the server read it
        # comes in: its answer must not be written after the end of stream...
        xmpp.send_raw(xmpp.stream_footer)
        assert daemon.state.session.link is Link.CLOSING
        daemon._on_element(request("late-1"))
        assert not any("late-1" in text for text in first.written), first.written

        # ...but sent on a fresh connection once the old one is gone, which is then closed.
        xmpp.transport = None
        daemon._on_disconnected("closed by the server")
        await asyncio.sleep(0)
        assert calls == ["disconnect", "connect"]
        assert not daemon.finished.done()
        xmpp.transport = second = FakeTransport()
        daemon._on_session_start(None)
        (answer,) = second.written
        reply = ET.fromstring(f"<s xmlns='{NS}'>{answer}</s>")[0]
        assert (reply.get("type"), reply.get("id"), reply.get("to")) == (
            "error",
            "late-1",
            "user@localhost/u",
        )
        assert calls == ["disconnect", "connect", "disconnect"]

        xmpp.transport = None
        daemon._on_disconnected("closed by the server")
        assert daemon.finished.done()
        assert daemon.finished.result() == 0

    asyncio.run(main())


def test_answers_that_cannot_be_sent_are_logged_by_id(caplog: Any) -> None:
    async def main() -> None:
        settings = parse_settings(
            {
                "component": "proxy.localhost",
                "server": "127.0.0.1:9",
                "secret": "s",
                "target": "svc@localhost",
                "seed": 1,
            }
        )
        daemon = Daemon(settings, asyncio.get_running_loop())
        xmpp: Any = daemon.xmpp
        xmpp.connect = lambda *a, **k: None
        xmpp.disconnect = lambda *a, **k: None
        xmpp.transport = FakeTransport()
        daemon._on_session_start(None)
        daemon.request_stop("SIGTERM")
        xmpp.send_raw(xmpp.stream_footer)
        daemon._on_element(request("late-2"))
        xmpp.transport = None
        # The fresh connections never come up: after the last try the loss is logged, by id.
        daemon._on_disconnected("closed by the server")
        for _ in range(3):
            await asyncio.sleep(0)
            assert not daemon.finished.done()
            daemon._on_connection_failed("connection refused")
        assert daemon.finished.done()

    asyncio.run(main())
    lost = [r.getMessage() for r in caplog.records if "stop.lost" in r.getMessage()]
    assert len(lost) == 1 and "late-2" in lost[0], lost
