"""Flow control on the component connection: a server slow to read what the proxy writes.

While the transport's write buffer is above the high-water mark, new requests (forwards) wait in
the daemon's queue and everything else, above all the answers the proxy owes (timeouts
included), is written at once: an answer reaches the server behind at most about a high-water
mark of forwards. Reading goes on, so requests are seen (and timed) when they arrive; a queued
request whose timeout has passed is not sent at all.
"""

from __future__ import annotations

import asyncio
from typing import Any

from client_proxy.core import StanzaReceived, TimePassed
from client_proxy.shell.config import parse_settings
from client_proxy.shell.daemon import SEND_BUFFER, WRITE_HIGH_WATER, WRITE_LOW_WATER, Daemon
from client_proxy.testing.component_server import ComponentServer
from client_proxy.testing.fake_stream import feed

PROXY = "proxy.localhost"
TARGET = "svc@localhost"
NS = "jabber:component:accept"
ONLINE = (
    f"<presence type='subscribed' from='{TARGET}' to='{PROXY}'/>"
    f"<presence from='{TARGET}/a' to='{PROXY}'/>"
)


def settings(port: int, **extra: object) -> Any:
    return parse_settings(
        {
            "component": PROXY,
            "server": f"127.0.0.1:{port}",
            "secret": "s",
            "target": TARGET,
            "seed": 1,
            "rate_limit": 0,
            **extra,
        }
    )


HEADER = (
    f"<?xml version='1.0'?><stream:stream xmlns='{NS}' "
    f"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='{PROXY}'>"
)


def request(iq_id: str) -> str:
    return (
        f"<iq type='get' id='{iq_id}' from='user@localhost/u' to='{PROXY}'>"
        f"<q xmlns='urn:example:big'>{iq_id}</q></iq>"
    )


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.texts: list[str] = []

    def write(self, data: bytes) -> None:
        self.texts.append(data.decode())

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.calls.append(f"limits {high} {low}")

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False


def test_requests_wait_above_the_high_mark_and_answers_go_first() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        daemon = Daemon(settings(9, request_timeout=5), loop)
        xmpp: Any = daemon.xmpp
        transport = RecordingTransport()
        xmpp.connection_made(transport)
        assert transport.calls == [f"limits {WRITE_HIGH_WATER} {WRITE_LOW_WATER}"]
        data = HEADER + "<handshake/>" + ONLINE
        xmpp.get_buffer(-1)[: len(data)] = data.encode()
        xmpp.buffer_updated(len(data))
        transport.texts.clear()

        xmpp.pause_writing()  # the server is slow to read
        feed(xmpp, request("q1") + request("q2"))
        assert transport.texts == []  # the forwards wait
        daemon.apply(TimePassed(loop.time() + 5))  # both time out: the answers go at once
        assert [t.count("remote-server-timeout") for t in transport.texts] == [1, 1]
        feed(xmpp, request("q3"))
        transport.texts.clear()
        xmpp.resume_writing()
        # The forwards follow, in order, once the buffer has drained.
        assert [t.split("<q xmlns='urn:example:big'>")[1][:2] for t in transport.texts] == [
            "q1",
            "q2",
            "q3",
        ]
        assert all(f"to='{TARGET}/a'" in t for t in transport.texts)
        assert transport.calls[1:] == []  # reading never paused

    asyncio.run(main())


def test_queued_requests_past_their_timeout_are_not_sent() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        daemon = Daemon(settings(9, request_timeout=0.05), loop)
        xmpp: Any = daemon.xmpp
        transport = RecordingTransport()
        xmpp.connection_made(transport)
        feed(xmpp, HEADER + "<handshake/>" + ONLINE)
        transport.texts.clear()
        xmpp.pause_writing()
        feed(xmpp, request("old"))
        await asyncio.sleep(0.1)  # its timeout answer goes out at once
        assert any("remote-server-timeout" in t for t in transport.texts)
        transport.texts.clear()
        xmpp.resume_writing()
        assert transport.texts == []
        assert daemon.counters["send.expired"] == 1

    asyncio.run(main())


def test_a_slow_server_gets_the_timeouts_on_time_and_the_write_buffer_stays_bounded() -> None:
    """60 requests of 100 KB to a resource that never answers, the server reading 2 MB/s.

    An answer due now waits behind what is queued for the server: the write buffer (the high
    mark plus what one read forwards), the kernel's send buffer (twice SEND_BUFFER on Linux) and
    the server's receive buffer. Without flow control the whole load queues: 6 MB, 3 s at
    2 MB/s (the timeouts measured 2 s late); with it, 0.7 s.
    """
    requests, size, timeout, rate = 60, 100_000, 1.0, 2_000_000
    receive_buffer = 64 * 1024
    queued = WRITE_HIGH_WATER + 256 * 1024 + 2 * SEND_BUFFER + 2 * receive_buffer

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = ComponentServer(PROXY, "s", receive_buffer=receive_buffer)
        port = await server.start()
        daemon = Daemon(settings(port, request_timeout=timeout), loop)
        read_at: dict[str, float] = {}
        apply = daemon.apply

        def recording(event: Any) -> None:
            if isinstance(event, StanzaReceived) and event.stanza.type == "get":
                read_at[event.stanza.id or ""] = event.now
            apply(event)

        daemon.apply = recording  # type: ignore[method-assign]
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                transport = daemon.xmpp.transport
                if transport is not None:
                    peak = max(peak, transport.get_write_buffer_size())
                await asyncio.sleep(0.002)

        sampler = asyncio.create_task(sample())
        try:
            daemon.start()
            await asyncio.wait_for(server.authenticated.wait(), 10)
            await server.wait_for(1)
            await server.write([ONLINE.encode()])
            while not daemon.state.session.online:
                await asyncio.sleep(0.001)
            server.read_rate = rate
            seen = len(server.stanzas)
            body = "x" * size
            sent_at = loop.time()
            await server.write(
                f"<iq type='get' id='r{n}' from='user@localhost/u{n % 10}' to='{PROXY}'>"
                f"<q xmlns='urn:example:big'>{body}</q></iq>".encode()
                for n in range(requests)
            )
            answers: dict[str, float] = {}
            while len(answers) < requests:
                await server.wait_for(len(server.stanzas) + 1, timeout=30)
                for element, at in zip(
                    server.stanzas[seen:], server.arrived_at[seen:], strict=True
                ):
                    if element.get("type") == "error" and element.get("to", "").startswith("user@"):
                        answers[element.get("id") or ""] = at
                seen = len(server.stanzas)
            late = {i: answers[i] - (read_at[i] + timeout) for i in answers}
            seen_late = [answers[i] - (sent_at + timeout) for i in answers]
            print(
                f"\nlateness of the timeout answers: max {max(late.values()):.3f} s; "
                f"peak write buffer {peak / 1024:.0f} KiB; congested "
                f"{daemon.xmpp.congestions} times; late after sending: max {max(seen_late):.3f} s"
            )
            assert sorted(answers) == sorted(f"r{n}" for n in range(requests))
            assert max(late.values()) < queued / rate + 0.5
            # The requests are read as they come: late after sending as after reading.
            assert max(seen_late) < queued / rate + 0.5
            assert peak <= WRITE_HIGH_WATER + 2 * 256 * 1024
        finally:
            sampler.cancel()
            daemon.request_stop()
            await server.close()
            daemon.xmpp.abort()

    asyncio.run(main())
