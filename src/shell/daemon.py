"""The daemon: a slixmpp component connection that feeds the core and carries out its outputs.

Everything here is plumbing. Stanzas become :class:`StanzaReceived` events, the core's
:class:`SendStanza` outputs are written to the stream, its deadlines become one asyncio timer,
its log records become log lines, and its counters are kept for the status line. Every decision
(where a request goes, what is answered, when) is made by :func:`client_proxy.core.step`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections import Counter, deque
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from slixmpp import ComponentXMPP
from slixmpp.stanza.stream_error import StreamError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

from . import corelib
from .codec import read_stanza, to_text
from .config import Settings
from .corelib import (
    ConnectionLost,
    ConnectionUp,
    CountMetric,
    EndOfStreamSent,
    Event,
    Link,
    LogRecord,
    Reconnect,
    RequestEnded,
    SendStanza,
    StanzaReceived,
    Stopped,
    StopRequested,
    TimePassed,
    initial_state,
    step,
)
from .health import status_line
from .metrics import Metrics, MetricsServer
from .notify import Notifier
from .reload import Reloads
from .settled import load as load_settled
from .settled import record as record_settled
from .settled import settled_path

__all__ = ["EX_CONFIG", "FATAL_AT_FIRST", "STANDBY_RETRY", "Daemon", "run"]

log = logging.getLogger("client_proxy")

#: sysexits.h's EX_CONFIG: systemd units say RestartPreventExitStatus=78, so a broken config
#: is not restarted in a loop.
EX_CONFIG = 78
#: Stream errors (RFC 6120 §4.9.3) that, at the first connection, mean the config is wrong:
#: a bad secret (not-authorized), a component the server does not know (host-unknown).
FATAL_AT_FIRST = frozenset({"not-authorized", "host-unknown"})
#: Seconds between attempts while the server refuses the component with the stream error
#: `conflict` (RFC 6120 §4.9.3.3) because another connection holds it: a standby. Prosody 0.12
#: does that after the handshake (mod_component's default `component_conflict_resolve =
#: "kick_new"`) and lets the next attempt in as soon as the holder's connection is gone, so the
#: standby takes over at most this long after the active instance dies (measured: README,
#: docs/deploy.md "Standby"). Fixed and short rather than the growing backoff of other
#: failures: here the refusal is the normal state, and the moment it ends is the moment to be
#: back. Each attempt costs the server a TCP connection and a handshake, and Prosody logs one
#: error line for it ("Second component attempted to connect, denying connection").
STANDBY_RETRY = 1.0

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# slixmpp 1.17 facts (measured; keep in mind when upgrading it):
# - BaseXMPP registers a 'Presence' stream handler whose events (presence_probe,
#   presence_subscribe, presence_subscribed, presence_unsubscribe, presence_unsubscribed,
#   presence_available, presence_unavailable, roster_subscription_request) drive an in-memory
#   roster; ComponentXMPP answers probes from it, with `unsubscribed` while it is empty. Left on,
#   it would talk to the target behind the core's back, so the handler and the events go.
# - An IQ that no stream handler matches is answered `feature-not-implemented` by
#   Iq.unhandled(); the catch-all handler below matches every stanza so that never happens.
# - Iq.send() registers a matcher per outstanding IQ (measured 213 vs 75 us of component CPU per
#   proxied request) and breaks when two requesters use the same id: stanzas are written as they
#   are, as text (codec.to_text), straight to the transport.
# - For every element it parses, slixmpp builds a stanza object (plugins, interfaces), runs the
#   incoming filters and every handler's matcher; with py-spy under load (`just bench --profile`)
#   that and its tostring (escaping character by character) were most of the shell's time. So
#   _Component reads the stream itself (XMLStream.data_received, spelled out in
#   _Component._read_events) and hands iq/message/presence elements straight to the daemon;
#   everything else (the handshake, stream errors) goes to slixmpp's _spawn_event as before. The
#   catch-all handler below stays as a safety net for any stanza that reaches slixmpp's own
#   handling all the same.
# - What the daemon sends while slixmpp is parsing one read from the socket is written in one
#   transport.write at the end of that read (one send() instead of one per stanza).
# - After a stop, slixmpp's disconnect() writes the end of stream with send_raw(stream_footer)
#   and keeps reading until the server closes: _Component reports that moment, and the daemon
#   tells the core (EndOfStreamSent). What the server routed to us before it read our end of
#   stream still arrives then; the core holds the answers and asks for a fresh connection
#   (Reconnect) once the old one is gone.
_BUILTIN_HANDLERS = ("IM", "IMError", "Presence")
_BUILTIN_EVENTS = (
    "presence_probe",
    "presence_subscribe",
    "presence_subscribed",
    "presence_unsubscribe",
    "presence_unsubscribed",
    "presence_available",
    "presence_unavailable",
    "presence_dnd",
    "presence_xa",
    "presence_chat",
    "presence_away",
    "roster_subscription_request",
)


class _EveryStanza(MatcherBase):
    """Matches every iq, message and presence of the component stream."""

    def __init__(self, namespace: str) -> None:
        super().__init__(None)
        self._tags = frozenset(f"{{{namespace}}}{kind}" for kind in ("iq", "message", "presence"))

    def match(self, xml: Any) -> bool:
        return xml.xml.tag in self._tags  # type: ignore[no-any-return]


#: The most one read from the socket brings (what asyncio's and uvloop's own reads ask for).
_READ_SIZE = 256 * 1024

#: Flow control on the component connection (asyncio's pause_writing/resume_writing): above
#: this many bytes in the transport's write buffer the server is reading what the proxy writes
#: more slowly than it comes, and the stanzas the core says may wait (SendStanza.until: the
#: requests it sends, forwards and the target's outbound calls, which carry the large
#: payloads) wait in the daemon's own queue, written in
#: order once the buffer is down to the low mark. Everything else, above all the answers the
#: proxy owes (timeouts included), is written at once, ahead of them. Measured before: with
#: 100 KB requests and Prosody reading the component connection at about 3 MB/s, forwards piled
#: up by hundreds of MiB and the timeout answers reached their requesters 39-58 s after they
#: were sent instead of 8 s. Reading goes on, so that every request is seen, and answered or
#: refused by the core on time; the core's own limits bound what it holds. The high mark is two
#: of the largest stanzas a server routes by default (Prosody's c2s limit is 256 KiB).
WRITE_HIGH_WATER = 512 * 1024
WRITE_LOW_WATER = WRITE_HIGH_WATER // 4
#: The kernel's send buffer for the component socket (Linux doubles it). Left to itself, Linux
#: grows it to 4 MiB (net.ipv4.tcp_wmem), a queue the write buffer's marks cannot see: with
#: 100 KB requests and a server reading 1 MB/s the timeout answers came about 2 s late behind it
#: (tests/unit/test_daemon_flow.py). 256 KiB still carries about 500 MB/s at a 1 ms round trip;
#: a proxy far from its server (50 ms) would be held to about 10 MB/s.
SEND_BUFFER = 256 * 1024
#: A safety net: with this many requests waiting in the daemon's queue, reading pauses as well
#: (until half are written), so that the queue cannot grow past what the core could hold.
DEFERRED_MAX = 10_000


def _ends_only(parser: Any) -> bool:
    """Make ``parser`` (slixmpp's ``XMLPullParser(("start", "end"))``) report the end of each
    element only, from the next bytes it is fed; False if this Python's ElementTree has not the
    internals for it (``XMLPullParser._events_queue`` and ``XMLParser._setevents``, there since
    Python 3.4), and then nothing changes. The daemon reads the queue itself (_read_ends): an
    ElementTree generator and a "start" event per element cost more than the rest of reading
    a stanza (measured with sys.settrace: 438 of 3,486 bytecodes per request and its reply)."""
    queue = getattr(parser, "_events_queue", None)
    setevents = getattr(getattr(parser, "_parser", None), "_setevents", None)
    if queue is None or setevents is None:
        return False
    setevents(queue, ("end",))
    return True


class _Component(ComponentXMPP, asyncio.BufferedProtocol):  # type: ignore[misc]
    """ComponentXMPP with its own stanza handling switched off.

    ``on_element`` gets every iq, message and presence element as parsed; ``flush`` gets what
    was queued in ``batch`` while one read from the socket was being parsed; ``on_end_of_stream``
    is called when our end of stream has been written.

    ``congested`` says that the transport's write buffer is above :data:`WRITE_HIGH_WATER`
    (asyncio's ``pause_writing``); ``on_writable`` is called when it is back below the low mark.

    The socket is read into one buffer kept for the purpose (a buffered protocol). A plain
    protocol on asyncio's loop gets a fresh 256 KiB bytes object per read, which glibc maps,
    shrinks and unmaps again: three system calls and a page fault per read on top of the
    read itself (strace -c at one request in flight).
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.component, settings.secret, settings.host, settings.port)
        for name in _BUILTIN_HANDLERS:
            self.remove_handler(name)
        for event in _BUILTIN_EVENTS:
            for handler in self._handlers_for(event):
                self.del_event_handler(event, handler)
        self._stanza_tags = frozenset(
            f"{{{self.default_ns}}}{kind}" for kind in ("iq", "message", "presence")
        )
        self.on_element: Any = None
        self.flush: Any = None
        self.batch: list[str] | None = None
        self.on_end_of_stream: Any = None
        self._read_buffer = memoryview(bytearray(_READ_SIZE))
        #: The parser that reports element ends only (see _read_ends); slixmpp makes a new
        #: parser for each connection.
        self._ends_only: Any = None
        #: The write buffer is above the high mark (see WRITE_HIGH_WATER); how many times so far.
        self.congested = False
        self.congestions = 0
        self.reading_paused = False
        #: Called when the write buffer is back below the low mark.
        self.on_writable: Any = None

    def connection_made(self, transport: Any, send_event: bool = True) -> None:
        self.congested = False
        self.reading_paused = False
        # Before anything is written on this connection (slixmpp writes its stream header).
        set_limits = getattr(transport, "set_write_buffer_limits", None)
        if set_limits is not None:
            set_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        super().connection_made(transport, send_event)

    def pause_writing(self) -> None:
        # Called by the transport from inside a write once its buffer passes the high mark.
        if not self.congested:
            self.congested = True
            self.congestions += 1

    def resume_writing(self) -> None:
        if self.congested:
            self.congested = False
            if self.on_writable is not None:
                self.on_writable()

    def pause_reading(self) -> None:
        transport = self.transport
        if not self.reading_paused and transport is not None and not transport.is_closing():
            self.reading_paused = True
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self.transport
        if self.reading_paused:
            self.reading_paused = False
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    def send_raw(self, data: str | bytes) -> None:
        super().send_raw(data)
        # How slixmpp ends the stream (_end_stream_wait).
        if data == self.stream_footer and self.on_end_of_stream is not None:
            self.on_end_of_stream()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes].tobytes())

    def data_received(self, data: bytes | str) -> None:
        parser = self.parser
        if parser is None:  # not connected: slixmpp logs it
            super().data_received(data)
            return
        batch: list[str] = []
        self.batch = batch
        try:
            parser.feed(data)
            self._read_events(parser)
        except ParseError:
            # What slixmpp does with XML that is not well-formed: a stream error, and goodbye.
            log.error("Parse error: %r", data)
            error = StreamError()
            error["condition"] = "not-well-formed"
            error["text"] = f"Server sent: {data!r}"
            self.send(error)
            self.disconnect()
        finally:
            self.batch = None
            if batch and self.flush is not None:
                self.flush(batch)

    def _read_events(self, parser: Any) -> None:
        # slixmpp 1.17's XMLStream.data_received, less what it spends on each parser event (a
        # typing.cast call and a second test of the event's kind), and with the daemon's
        # stanzas handed over at once: this runs at every wake-up of the proxy.
        if parser is self._ends_only:
            self._read_ends(parser._events_queue)
            return
        on_element = self.on_element
        stanza_tags = self._stanza_tags
        for event, xml in parser.read_events():
            if event == "start":
                if self.xml_depth == 0:  # the stream's root element: the server's header
                    self.xml_root = xml
                    self.start_stream_handler(xml)
                self.xml_depth += 1
                continue
            self.xml_depth -= 1
            depth = self.xml_depth
            if depth == 1:  # a child of the root element: a stanza
                if on_element is not None and xml.tag in stanza_tags:
                    on_element(xml)
                else:
                    self._spawn_event(xml)
                if self.xml_root is not None:
                    self.xml_root.clear()  # keep the root element empty of children
            elif depth == 0:  # the server's end of stream
                self.disconnect_reason = "End of stream"
                self.abort()
                return
        if self.xml_depth == 1 and _ends_only(parser):
            self._ends_only = parser

    def _read_ends(self, queue: Any) -> None:
        # Once the stream's header is in, the parser reports the end of each element only (see
        # _ends_only), and the events need not be looked at one by one. The parser adds each
        # element to its parent when it starts, and the root is emptied of the stanzas read
        # after each read: the root's children are the stanzas begun since, in order, and all
        # but the last have ended (siblings cannot overlap). The last has ended too if its end
        # is the last event, or the root's own end (the server's end of stream) is.
        if not queue:
            return
        error = queue.pop() if type(queue[-1]) is not tuple else None  # a ParseError: last
        last = queue[-1][1] if queue else None
        queue.clear()
        root = self.xml_root
        stanzas = root[:]
        if stanzas and last is not stanzas[-1] and last is not root:
            stanzas.pop()  # still being read
        del root[: len(stanzas)]
        on_element = self.on_element
        stanza_tags = self._stanza_tags
        for xml in stanzas:
            if on_element is not None and xml.tag in stanza_tags:
                on_element(xml)
            else:
                self._spawn_event(xml)
                if self.xml_root is not root:  # the stream was reset meanwhile
                    return
        if last is root:  # the server's end of stream
            self.xml_depth = 0
            self.disconnect_reason = "End of stream"
            self.abort()
        elif error is not None:
            raise error  # as XMLPullParser.read_events raises it, after the events before it

    def _handlers_for(self, event: str) -> list[Any]:
        names = {
            "presence_probe": "_handle_probe",
            "presence_subscribe": "_handle_subscribe",
            "presence_subscribed": "_handle_subscribed",
            "presence_unsubscribe": "_handle_unsubscribe",
            "presence_unsubscribed": "_handle_unsubscribed",
            "presence_unavailable": "_handle_unavailable",
            "roster_subscription_request": "_handle_new_subscription",
        }
        name = names.get(event, "_handle_available")
        handler = getattr(self, name, None)
        return [handler] if handler is not None else []


class Daemon:
    """One running proxy: the core's state, the connection, the timer and the counters."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.settings = settings
        self.loop = loop or asyncio.get_running_loop()
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(8))
        # Its name in the ids it seals: random, whatever the seed, so that two instances (or a
        # restart) never take each other's answers for their own.
        instance = int.from_bytes(os.urandom(4))
        #: Where the instances that stopped cleanly are told to the next process (settled.py).
        self.settled_path = settled_path(os.environ)
        settled = frozenset[str]()
        if self.settled_path is not None:
            settled = load_settled(self.settled_path, int(time.time() * 1000))
            if settled:
                log.info(
                    "settled.loaded: %d earlier instance(s) stopped with everything answered: "
                    "replies to what they forwarded are dropped (%s)",
                    len(settled),
                    ", ".join(sorted(settled)),
                )
        self.state = initial_state(settings.core, seed, instance=instance, settled=settled)
        self.counters: Counter[str] = Counter()
        self.finished: asyncio.Future[int] = self.loop.create_future()
        #: The armed timer and when it fires; the core's latest deadline (never earlier).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._deadline: float | None = None
        self._stopping = False
        self._reconnect: asyncio.TimerHandle | None = None
        self._attempt = 0
        self._last_failure: str | None = None
        self._jitter = random.Random(seed)
        #: The core asked for a fresh connection (Reconnect) and it is not up yet.
        self._flushing = False
        #: Whether each stanza is logged (`--log-level debug`, set before the daemon starts):
        #: read once, as asking the logger costs about a tenth of a stanza's handling.
        self._debug = log.isEnabledFor(logging.DEBUG)
        #: While `metrics_listen` is set (set_metrics_listen): what the core reports is counted
        #: there, and served over HTTP.
        self.metrics: Metrics | None = None
        self.metrics_server: MetricsServer | None = None
        #: systemd's notification socket (does nothing when not under systemd).
        self.notifier = Notifier()
        #: The session the status line was last made from: it changes by identity only when
        #: the link, the subscription or the resources do (never per request).
        self._session_seen: object = None
        #: A handshake has succeeded once: later refusals are retried, not fatal.
        self.connected_once = False
        #: Since when (loop time) the server has refused us with `conflict`: standing by,
        #: retrying every STANDBY_RETRY seconds; None when not standing by.
        self.standby_since: float | None = None
        #: READY=1 has been sent (at the first handshake, or on standing by).
        self._ready_sent = False
        #: A reload asked for a connection under new settings: reconnect without backoff.
        self.reconnect_now = False
        #: Requests waiting for the write buffer to drain: (their SendStanza.until, the stanza).
        self._deferred: deque[tuple[float, Any]] = deque()

        xmpp = _Component(settings)
        self.xmpp = xmpp
        self._ns: str = xmpp.default_ns
        xmpp.on_element = self._on_element
        xmpp.flush = self._write
        xmpp.on_writable = self._write_deferred
        xmpp.on_end_of_stream = lambda: self.apply(EndOfStreamSent(self.loop.time()))
        xmpp.register_handler(Callback("client-proxy", _EveryStanza(self._ns), self._on_stanza))
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("disconnected", self._on_disconnected)
        xmpp.add_event_handler("connection_failed", self._on_connection_failed)
        xmpp.add_event_handler("stream_error", self._on_stream_error)

    # -- driving the core ----------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Feed one event to the core and carry out what it returns, in order."""
        transition = step(self.state, event)
        self.state = transition.state
        for output in transition.outputs:
            kind = type(output)
            if kind is SendStanza:
                stanza = output.stanza
                if self._deferred or self.xmpp.congested:
                    self._send(stanza, output.until)  # requests may have to wait
                else:
                    self._send_now(stanza)
                if self.metrics is not None and stanza.kind == "message":
                    self._count_message(stanza)
            elif kind is RequestEnded:
                if self.metrics is not None:
                    self.metrics.request_ended(output)
            elif kind is CountMetric:
                self.counters[output.name] += 1
                if self.metrics is not None:
                    self.metrics.count(output.name)
            elif kind is LogRecord:
                log.log(_LEVELS[output.level], "%s: %s", output.code, output.message)
            elif kind is Stopped:
                self._on_stopped()
            elif kind is Reconnect:
                self._flushing = True
                self.loop.call_soon(self.xmpp.connect)
        self._arm(transition.deadline)
        if self.state.session is not self._session_seen:
            self._session_seen = self.state.session
            self.notifier.status(status_line(self.state, self.standby))

    def _count_message(self, stanza: Any) -> None:
        # A message the core sends to a target resource came from a user; any other, from
        # the target. Errors bounced back are not messages proxied.
        if stanza.type != "error" and self.metrics is not None:
            to = stanza.to or ""
            inbound = to.partition("/")[0] == self.settings.target
            self.metrics.message("inbound" if inbound else "outbound")

    def _arm(self, deadline: float | None) -> None:
        # The core's deadline moves with almost every step: each new request is due
        # request_timeout after it came in, and the last answer clears it. Cancelling and making
        # a timer each time cost a call_at and a cancel per request (and with uvloop a handle
        # closed on the next turn of the loop), so a timer is only made when the new deadline is
        # earlier than the armed one. One that fires before the deadline it then finds re-arms
        # for it, and one that finds none does nothing: a spare wake-up per request_timeout.
        self._deadline = deadline
        if deadline is None:
            return
        at = self._timer_at
        if at is not None and at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        armed = self._timer_at
        deadline = self._deadline
        self._timer = None
        self._timer_at = None
        if deadline is None:
            return
        if armed is not None and deadline > armed:
            self._arm(deadline)
            return
        # The loop may fire up to one clock resolution early; the deadline has been reached.
        now = self.loop.time()
        self.apply(TimePassed(now if now >= deadline else deadline, time.time()))

    def _send_now(self, stanza: Any) -> None:
        text = to_text(stanza, self._ns)
        if self._debug:
            log.debug(
                "send %s type=%s id=%s from=%s to=%s",
                stanza.kind,
                stanza.type,
                stanza.id,
                stanza.from_,
                stanza.to,
            )
        batch = self.xmpp.batch
        if batch is not None:
            batch.append(text)
        else:
            self._write([text])

    def _send(self, stanza: Any, until: float | None) -> None:
        """Write ``stanza``, or, while the server is slow to read, queue it if the core says it
        may wait (``until``, see SendStanza: the requests the proxy sends)."""
        deferred = self._deferred
        if until is not None and (deferred or self.xmpp.congested):
            self._drop_expired(self.loop.time())
            deferred.append((until, stanza))
            if len(deferred) >= DEFERRED_MAX:
                self.xmpp.pause_reading()
            return
        self._send_now(stanza)

    def _write_deferred(self) -> None:
        """The write buffer has drained: write queued requests until it is full again."""
        deferred = self._deferred
        now = self.loop.time()
        xmpp = self.xmpp
        while deferred and not xmpp.congested and xmpp.transport is not None:
            until, stanza = deferred.popleft()
            if until <= now:
                self.counters["send.expired"] += 1
                continue
            self._write([to_text(stanza, self._ns)])
        if xmpp.reading_paused and len(deferred) < DEFERRED_MAX // 2:
            xmpp.resume_reading()

    def _drop_expired(self, now: float) -> None:
        # What the core said is of no use after a time (SendStanza.until: its request has been
        # answered with a timeout by then) is not sent. Dropped from the front; one further in
        # (a request sent again elsewhere keeps its first deadline) goes when it comes to it.
        deferred = self._deferred
        while deferred and deferred[0][0] <= now:
            deferred.popleft()
            self.counters["send.expired"] += 1

    def _write(self, texts: list[str]) -> None:
        transport = self.xmpp.transport
        try:
            if transport is None:
                raise ConnectionError("not connected")
            transport.write("".join(texts).encode())
        except Exception as exc:  # the transport vanished under us; the core hears of it next
            self.counters["send.failed"] += len(texts)
            log.warning("send.failed: could not send %d stanza(s): %s", len(texts), exc)

    # -- slixmpp events ------------------------------------------------------------------------

    def _on_stanza(self, stanza: Any) -> None:
        self._on_element(stanza.xml)

    def _on_element(self, xml: Element) -> None:
        read = read_stanza(xml)
        if read is None:
            return
        core_stanza, size = read
        if self._debug:
            log.debug(
                "recv %s type=%s id=%s from=%s to=%s",
                core_stanza.kind,
                core_stanza.type,
                core_stanza.id,
                core_stanza.from_,
                core_stanza.to,
            )
        # The wall clock with it: sealed ids carry wall-clock deadlines (another process
        # checks them against its own clock), and a step of the system clock is seen at once.
        self.apply(StanzaReceived(self.loop.time(), core_stanza, size, time.time()))

    def _on_session_start(self, _: Any) -> None:
        if self._stopping:
            # The fresh connection the core asked for: it sends what it held, and this
            # connection ends as after Stopped.
            self._flushing = False
            self.apply(ConnectionUp(self.loop.time(), time.time()))
            self.xmpp.disconnect(wait=2.0)
            return
        if self.standby_since is not None:
            log.info(
                "standby.takeover: the server accepted %s after %.1f s standing by: this "
                "instance is now the active one",
                self.settings.component,
                self.loop.time() - self.standby_since,
            )
            self.standby_since = None
        elif self._last_failure is not None:
            log.info("connection.restored: after %d failed attempt(s)", self._attempt)
        self._attempt = 0
        self._last_failure = None
        first = not self.connected_once
        self.connected_once = True
        if not first and self.metrics is not None:
            self.metrics.reconnected()
        self.apply(ConnectionUp(self.loop.time(), time.time()))
        if first and not self._ready_sent:
            self._ready_sent = True
            self.notifier.ready()

    def _on_disconnected(self, reason: Any) -> None:
        # Like what the transport's buffer held: gone with the connection; the core deals with
        # the requests they carried (ConnectionLost).
        self.counters["send.failed"] += len(self._deferred)
        self._deferred.clear()
        if self._flushing and self.state.session.link is Link.DOWN:
            # The fresh connection the core asked for ended before its handshake completed
            # (Prosody's `conflict`: a standby took the component the moment our stream ended):
            # a failed attempt, as in _on_connection_failed; the core decides whether to ask
            # again.
            self._flushing = False
            self.apply(ConnectionLost(self.loop.time()))
            self._finish()
            return
        if self.state.session.link is not Link.DOWN:
            self.apply(ConnectionLost(self.loop.time()))
        if self._stopping:
            self._finish()  # unless the core has just asked for a fresh connection
            return
        if self.reconnect_now:
            self.reconnect_now = False
            self._attempt = 0
            self.loop.call_soon(self._connect)
            return
        self._schedule_reconnect(str(reason) if reason else "connection closed")

    def _on_connection_failed(self, reason: Any) -> None:
        # slixmpp would retry on its own with waits growing to 300 s and no jitter; take over.
        self.xmpp.cancel_connection_attempt()
        # The server itself is gone: back to the backoff, and a standby no more.
        self._leave_standby()
        if self._flushing:
            # The fresh connection the core asked for did not come up: it decides whether to
            # ask again.
            self._flushing = False
            self.apply(ConnectionLost(self.loop.time()))
            self._finish()
            return
        if not self._stopping:
            where = f"{self.settings.host}:{self.settings.port}"
            self._note_failure("connect", f"cannot reach the server at {where}: {reason}")
            self._schedule_reconnect(str(reason))

    def _on_stream_error(self, error: Any) -> None:
        condition = error["condition"] if error is not None else "unknown"
        if condition == "conflict" and not self._stopping:
            self._stand_by()
            return
        self._leave_standby()
        if condition == "not-authorized":
            message = (
                f"the server refused the handshake for {self.settings.component} "
                "(not-authorized): check `secret` against the server's component secret"
            )
        else:
            message = f"stream error from the server: {condition} {error['text'] or ''}".strip()
        if condition in FATAL_AT_FIRST and not self.connected_once and not self._stopping:
            # The secret or the component's name is wrong, or the server does not know it:
            # retrying cannot help, and an init system stops restarting on EX_CONFIG.
            if condition == "host-unknown":
                message = (
                    f"the server does not know the component {self.settings.component} "
                    "(host-unknown): declare it as a component on the server"
                )
            log.error("connection.refused: %s; exiting (%d, EX_CONFIG)", message, EX_CONFIG)
            self._stopping = True
            if not self.finished.done():
                self.finished.set_result(EX_CONFIG)
            return
        self._note_failure(f"stream.{condition}", message)

    def _stand_by(self) -> None:
        """The server refused the handshake with `conflict`: another connection holds the
        component (another instance, or one of ours the server has not seen go yet). Stand by:
        retry every STANDBY_RETRY seconds, and say so once, in the log, on /healthz and to
        systemd (for which a standby has started as it should: READY=1)."""
        if self.standby_since is not None:
            return
        self.standby_since = self.loop.time()
        self._last_failure = None
        log.info(
            "standby: the server has another connection for %s (conflict): standing by, "
            "trying every %g s to take over",
            self.settings.component,
            STANDBY_RETRY,
        )
        self.notifier.status(status_line(self.state, standby=True))
        if not self._ready_sent:
            self._ready_sent = True
            self.notifier.ready()

    def _leave_standby(self) -> None:
        if self.standby_since is not None:
            self.standby_since = None
            self.notifier.status(status_line(self.state))

    @property
    def standby(self) -> bool:
        """Standing by: the server refuses this instance because another holds the component."""
        return self.standby_since is not None

    def _note_failure(self, key: str, message: str) -> None:
        # One line per kind of failure in a streak, not one per attempt.
        if key != self._last_failure:
            log.error("connection.failed: %s", message)
            self._last_failure = key

    def _schedule_reconnect(self, reason: str) -> None:
        if self._reconnect is not None or self._stopping:
            return
        if self.standby_since is not None:
            log.debug("connection.retry: standing by, trying again in %g s", STANDBY_RETRY)
            self._reconnect = self.loop.call_later(STANDBY_RETRY, self._connect)
            return
        cap = self.settings.reconnect_max_delay
        # Capped exponential backoff with full jitter: servers restarted under many proxies are
        # not hit by all of them at once.
        delay = min(cap, 0.5 * 2**self._attempt) * self._jitter.uniform(0.5, 1.0)
        self._attempt = min(self._attempt + 1, 30)
        log.log(
            logging.INFO if self._attempt == 1 else logging.DEBUG,
            "connection.retry: reconnecting in %.1f s (%s)",
            delay,
            reason,
        )
        self._reconnect = self.loop.call_later(delay, self._connect)

    def _connect(self) -> None:
        self._reconnect = None
        if self._stopping:
            return
        self.xmpp.connect()

    def reconnect_under_new_settings(self) -> None:
        """A reload changed the component, the server or the secret (already set on the
        connection): end this stream and connect again at once. The core keeps what is
        outstanding and holds the answers due in between, as across any reconnect."""
        if self._stopping or self.reconnect_now:
            return  # a reconnection on its way reads the new settings when it connects
        if self._reconnect is not None:  # waiting to retry: retry now
            self._reconnect.cancel()
            self._reconnect = None
            self._attempt = 0
            self.loop.call_soon(self._connect)
        elif self.state.session.link is Link.UP:
            self.reconnect_now = True
            self.xmpp.disconnect(wait=2.0)
        else:  # an attempt under the old settings is under way: start one under the new
            self.xmpp.cancel_connection_attempt()
            self._attempt = 0
            self.loop.call_soon(self._connect)

    async def set_metrics_listen(self, address: tuple[str, int] | None) -> None:
        """Serve /metrics and /healthz on ``address`` from now on (None: nowhere, and stop
        counting). A listener that moves keeps its counts. If the address cannot be bound,
        raise OSError and leave everything as it was."""
        server = self.metrics_server
        if address is None:
            if server is not None:
                server.close()
                log.info("metrics.closed: no longer listening on %s", server.address)
            self.metrics = self.metrics_server = None
            return
        host, port = address
        if server is not None:
            await server.move(host, port)
            return
        metrics = Metrics(lambda: self.state, lambda: self.standby)
        server = MetricsServer(metrics, lambda: self.state, host, port, lambda: self.standby)
        await server.start()
        if self.finished.done():  # stopped meanwhile: `run` has closed what there was
            server.close()
            return
        self.metrics, self.metrics_server = metrics, server

    # -- stopping ------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """A stop has been asked for (SIGTERM, SIGINT, or a fatal refusal)."""
        return self._stopping

    def request_stop(self, signame: str = "stop") -> None:
        """Begin a graceful stop: the core drains, then :meth:`_on_stopped` disconnects."""
        if self._stopping:
            log.warning("stop.forced: second %s; exiting now", signame)
            if not self.finished.done():
                self.finished.set_result(1)
            return
        self._stopping = True
        self.notifier.stopping()
        if self._reconnect is not None:
            self._reconnect.cancel()
            self._reconnect = None
        log.info("stop.signal: %s received", signame)
        self.apply(StopRequested(self.loop.time(), self.settings.drain_timeout))

    def _on_stopped(self) -> None:
        log.info("stop.done: every request answered; disconnecting. %s", self.status())
        if self.settled_path is not None:
            # Every forward's deadline is within request_timeout of now (no new one since the
            # stop began); a second for the clocks of the next process.
            now = time.time()
            until = int((now + self.state.config.request_timeout + 1.0) * 1000)
            record_settled(self.settled_path, self.state.instance, until, int(now * 1000))
        if self.state.session.link is not Link.DOWN:
            self.xmpp.disconnect(wait=2.0)
            # If the server does not close its side, do not wait forever.
            self.loop.call_later(5.0, self._finish)
        else:
            self.xmpp.cancel_connection_attempt()
            # After the outputs of this step: the core may ask for a fresh connection in it.
            self.loop.call_soon(self._finish)

    def _finish(self) -> None:
        """Exit, unless a fresh connection the core asked for is on its way."""
        if not self._flushing and not self.finished.done():
            self.finished.set_result(0)

    def status(self) -> str:
        """One line for the operator: link, resources, outstanding requests, counters."""
        s = self.state.session
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())) or "none"
        return (
            f"link={s.link.value} subscription={s.subscription.value} "
            f"resources=[{', '.join(s.online)}] outstanding={len(self.state.requests)} "
            f"counters: {counts}"
        )

    def start(self) -> None:
        log.info(
            "starting: %s proxies IQs to %s via %s:%d (core: %s)",
            self.settings.component,
            self.settings.target,
            self.settings.host,
            self.settings.port,
            corelib.why,
        )
        self.xmpp.connect()


async def run(settings: Settings, config_path: str | None = None) -> int:
    """Run the proxy until SIGTERM/SIGINT and the drain are over; the exit code (78 when the
    server refuses the first handshake). SIGHUP reloads ``config_path``."""
    loop = asyncio.get_running_loop()
    daemon = Daemon(settings, loop)
    if settings.metrics_listen is not None:
        try:
            await daemon.set_metrics_listen(settings.metrics_listen)
        except OSError as exc:
            host, port = settings.metrics_listen
            log.error("metrics.failed: cannot listen on %s:%d: %s", host, port, exc)
            return EX_CONFIG
    signals = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1]
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop, sig.name)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.info("status: %s", daemon.status()))
    if config_path is not None:
        # A SIGHUP (systemctl reload, logrotate, a closed terminal) reloads; it never stops.
        loop.add_signal_handler(signal.SIGHUP, Reloads(daemon, config_path).signal)
        signals.append(signal.SIGHUP)
    daemon.notifier.start_watchdog(loop)
    daemon.start()
    try:
        return await daemon.finished
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        # Until the process is gone, a stray SIGHUP must not kill it (the default action).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if daemon.metrics_server is not None:
            daemon.metrics_server.close()
        daemon.notifier.close()
