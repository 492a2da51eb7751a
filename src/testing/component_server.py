"""A fake XMPP server's component port (XEP-0114) on loopback, for one component connection.

Enough of the protocol to put a real component (client-proxy's daemon, or any other) on the
wire without a real server: the component's stream header, the server's header with a stream
id, the handshake checked against SHA-1(stream id + secret) (XEP-0114 §3), then stanzas both
ways. What the test writes goes out in the pieces it chooses (mid-tag, mid-character); what the
component writes is parsed and kept, and can be read as slowly as a busy server reads it::

    server = ComponentServer("proxy.localhost", "secret")
    port = await server.start()
    ...  # connect the component to 127.0.0.1:port
    await server.authenticated.wait()
    await server.write([b"<presence from='svc@localhost/a' to='proxy.localhost'/>"])
    element = await server.next_stanza()

Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

__all__ = ["STREAMS_NS", "ComponentServer"]

STREAMS_NS = "http://etherx.jabber.org/streams"
_ACCEPT_NS = "jabber:component:accept"


class ComponentServer:
    """Accepts one component connection at a time on 127.0.0.1.

    ``read_rate``: if set, the component's bytes are read at about this many bytes per second
    (a server slow to read: the component's writes back up in its socket and write buffer).
    ``receive_buffer``: the listening socket's SO_RCVBUF, to keep what the kernel takes in on
    the server's behalf small (on loopback it grows to megabytes, and hides a slow reader).
    ``stanzas`` holds every top-level element the component sent after the handshake, in order.
    """

    def __init__(
        self,
        domain: str,
        secret: str,
        *,
        read_rate: float | None = None,
        receive_buffer: int | None = None,
    ) -> None:
        self.domain = domain
        self.receive_buffer = receive_buffer
        self.secret = secret
        self.read_rate = read_rate
        self.stream_id = "fake-stream-1"
        self.stanzas: list[ET.Element] = []
        #: When each of ``stanzas`` was read (the event loop's clock).
        self.arrived_at: list[float] = []
        self.authenticated = asyncio.Event()
        self.closed = asyncio.Event()
        self.bytes_read = 0
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[Any] | None = None

    async def start(self) -> int:
        """Listen on a free loopback port; the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.receive_buffer is not None:
            # Before listen(): the window scale is agreed on at the handshake.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._accept, sock=sock, limit=64 * 1024)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Each piece the test writes goes out as a segment of its own.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writer = writer
        self._reader_task = asyncio.current_task()
        try:
            await self._read(reader, writer)
        finally:
            self.closed.set()
            async with self._arrived:
                self._arrived.notify_all()

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(("start", "end"))
        depth = 0
        loop = asyncio.get_running_loop()
        while True:
            if self.read_rate is not None:
                # About read_rate bytes per second, in reads of at most a tenth of a second's worth.
                started = loop.time()
                data = await reader.read(max(1, int(self.read_rate / 10)))
                await asyncio.sleep(max(0.0, len(data) / self.read_rate - (loop.time() - started)))
            else:
                data = await reader.read(256 * 1024)
            if not data:
                return
            self.bytes_read += len(data)
            parser.feed(data)
            for event, found in parser.read_events():  # type: ignore[misc]
                # "start" and "end" events carry elements (only "start-ns" carries a tuple).
                element: ET.Element = found  # type: ignore[assignment]
                if event == "start":
                    depth += 1
                    if depth == 1:
                        self._header(element, writer)
                    continue
                depth -= 1
                if depth == 0:
                    writer.write(b"</stream:stream>")
                    return
                if depth == 1:
                    await self._top_level(element, writer)

    def _header(self, root: ET.Element, writer: asyncio.StreamWriter) -> None:
        if root.tag != f"{{{STREAMS_NS}}}stream" or root.get("to") != self.domain:
            raise ConnectionError(f"unexpected stream header {root.tag} to={root.get('to')}")
        writer.write(
            f"<?xml version='1.0'?><stream:stream xmlns='{_ACCEPT_NS}' "
            f"xmlns:stream='{STREAMS_NS}' id='{self.stream_id}' from='{self.domain}'>".encode()
        )

    async def _top_level(self, element: ET.Element, writer: asyncio.StreamWriter) -> None:
        if not self.authenticated.is_set():
            expected = hashlib.sha1((self.stream_id + self.secret).encode()).hexdigest()
            if element.tag == f"{{{_ACCEPT_NS}}}handshake" and (element.text or "") == expected:
                writer.write(b"<handshake/>")
                self.authenticated.set()
            else:
                writer.write(
                    b"<stream:error><not-authorized "
                    b"xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
                    b"</stream:stream>"
                )
                writer.close()
            return
        async with self._arrived:
            self.stanzas.append(element)
            self.arrived_at.append(asyncio.get_running_loop().time())
            self._arrived.notify_all()

    async def write(self, pieces: Iterable[bytes]) -> None:
        """Send ``pieces`` to the component, each as a write (and segment) of its own."""
        writer = self._writer
        if writer is None:
            raise ConnectionError("no component connected")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ET.Element]:
        """Wait until the component has sent ``count`` stanzas in all; they all."""

        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(
                    lambda: len(self.stanzas) >= count or self.closed.is_set()
                )

        await asyncio.wait_for(enough(), timeout)
        return list(self.stanzas)
