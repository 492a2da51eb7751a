"""A lean raw XMPP client for the bench and the soak: asyncio, expat, strings on the wire.

slixmpp builds a stanza object per element, runs every matcher, and `Iq.send` makes a future
per request: fine for a service, too heavy for a load generator that must not be the bottleneck.
This client logs in (SASL PLAIN over plaintext loopback, resource binding) and then hands each
top-level element to a callback as a :class:`Top`: its name, attributes, first child's name and
attributes, and the error condition (and an application-specific one beside it, RFC 6120
§8.3.2) if it is an error. Stanzas are written as strings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

__all__ = ["Client", "Top", "esc", "login"]

_STREAM = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)


def esc(value: str) -> str:
    """``value`` escaped for a single-quoted XML attribute."""
    if "&" in value or "<" in value or "'" in value or '"' in value or ">" in value:
        value = (
            value.replace("&", "&amp;")
            .replace("<", "&lt;")
            .replace(">", "&gt;")
            .replace("'", "&apos;")
            .replace('"', "&quot;")
        )
    return value


@dataclass(slots=True)
class Top:
    """One top-level element of the stream (a stanza, features, SASL result...)."""

    name: str
    attrs: dict[str, str]
    child: str | None = None
    #: The first child's attributes (a payload's, for an IQ request or result).
    child_attrs: dict[str, str] | None = None
    condition: str | None = None
    #: An application-specific condition in the error, beside the defined one (RFC 6120
    #: §8.3.2): Prosody's `not-connected` when it answers for a component that is not there.
    app_condition: str | None = None
    _in_error: bool = field(default=False, repr=False)


class Client(asyncio.Protocol):
    """One c2s connection. Set :attr:`on_top` to receive elements once logged in."""

    def __init__(self, user: str, domain: str, password: str, resource: str) -> None:
        self.user = user
        self.domain = domain
        self.password = password
        self.resource = resource
        self.jid = f"{user}@{domain}/{resource}"
        self.transport: asyncio.Transport | None = None
        self.on_top: Callable[[Top], None] | None = None
        self.on_lost: Callable[[Client], None] | None = None
        self.connected = False
        self._waiter: asyncio.Future[Top] | None = None
        self._early: list[Top] = []
        self._depth = 0
        self._current: Top | None = None
        self._parser: Any = None
        self._new_parser()
        # While data is being parsed, what the callbacks send is batched into one write.
        self._batch: list[str] | None = None

    # -- parsing -------------------------------------------------------------------------------

    def _new_parser(self) -> None:
        parser = expat.ParserCreate()
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        self._parser = parser
        self._depth = 0
        self._current = None

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth = self._depth + 1
        if depth == 2:
            self._current = Top(name, attrs)
        elif depth == 3:
            cur = self._current
            if cur is not None:
                if cur.child is None:
                    cur.child = name
                    cur.child_attrs = attrs
                if name == "error":
                    cur._in_error = True
        elif depth == 4:
            cur = self._current
            if cur is not None and cur._in_error and name != "text":
                if cur.condition is None:
                    cur.condition = name
                elif cur.app_condition is None:
                    cur.app_condition = name

    def _end(self, name: str) -> None:
        depth = self._depth
        self._depth = depth - 1
        if depth == 3:
            cur = self._current
            if cur is not None:
                cur._in_error = False
        elif depth == 2:
            cur = self._current
            self._current = None
            if cur is not None:
                self._deliver(cur)
        elif depth == 1 and self.transport is not None:
            self.transport.close()  # the server closed the stream

    def _deliver(self, top: Top) -> None:
        handler = self.on_top
        if handler is not None and self._waiter is None:
            handler(top)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(top)
            self._waiter = None
        else:
            self._early.append(top)

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connected = True

    def data_received(self, data: bytes) -> None:
        batch: list[str] = []
        self._batch = batch
        try:
            self._parser.Parse(data, False)
        except expat.ExpatError:
            if self.transport is not None:
                self.transport.abort()
        finally:
            self._batch = None
        if batch:
            self.send("".join(batch))

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"{self.jid}: connection lost"))
        if self.on_lost is not None:
            self.on_lost(self)

    # -- writing -------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        if self._batch is not None:
            self._batch.append(text)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(text.encode())

    def close(self) -> None:
        """A clean logout: unavailable presence, end of stream, close."""
        self.send("<presence type='unavailable'/></stream:stream>")
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection: no unavailable presence, no end of stream."""
        if self.transport is not None:
            self.transport.abort()

    # -- logging in ----------------------------------------------------------------------------

    async def _next(self, timeout: float) -> Top:
        if self._early:
            return self._early.pop(0)
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(self._waiter, timeout)
        finally:
            self._waiter = None

    async def _expect(self, timeout: float, *names: str) -> Top:
        while True:
            top = await self._next(timeout)
            if top.name in names:
                return top
            if top.name in ("failure", "stream:error"):
                raise ConnectionError(f"{self.jid}: {top.name} {top.child}")

    async def handshake(self, timeout: float, *, roster: bool) -> None:
        self.send(_STREAM.format(domain=self.domain))
        await self._expect(timeout, "stream:features")
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        await self._expect(timeout, "success")
        self._new_parser()
        self.send(_STREAM.format(domain=self.domain))
        await self._expect(timeout, "stream:features")
        self.send(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{esc(self.resource)}</resource></bind></iq>"
        )
        bound = await self._expect(timeout, "iq")
        if bound.attrs.get("type") != "result":
            raise ConnectionError(f"{self.jid}: bind failed ({bound.condition})")
        if roster:
            # Prosody sends subscription requests only to resources that asked for the roster.
            self.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
            while (await self._expect(timeout, "iq")).attrs.get("id") != "roster":
                pass


async def login(
    host: str,
    port: int,
    jid: str,
    password: str,
    *,
    roster: bool = False,
    on_top: Callable[[Top], None] | None = None,
    timeout: float = 15.0,
) -> Client:
    """Connect and log in as ``jid`` (user@domain/resource); ``on_top`` gets every element
    after that (anything that arrived during the login first)."""
    bare, _, resource = jid.partition("/")
    user, _, domain = bare.partition("@")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: Client(user, domain, password, resource), host, port
    )
    try:
        await client.handshake(timeout, roster=roster)
    except BaseException:
        client.abort()
        raise
    client.on_top = on_top
    if on_top is not None:
        early, client._early = client._early, []
        for top in early:
            with contextlib.suppress(Exception):
                on_top(top)
    return client
