"""Metrics and health over HTTP (`metrics_listen`): ``GET /metrics`` and ``GET /healthz``.

The core says what happened (:class:`~client_proxy.core.RequestEnded` for every request that
got its answer, :class:`~client_proxy.core.CountMetric` for every drop, refusal and retry); the
daemon hands those to :class:`Metrics`, which only counts (plain ints: see its docstring). The
gauges (outstanding requests, resources, link, subscription) are read from the core's state
when a scraper asks, so they cost nothing per request. The exposition is prometheus-client's:
Prometheus text, or OpenMetrics when the scraper's ``Accept`` asks for it, and the library's
process, platform and garbage-collector collectors beside ours.

The HTTP server runs on the daemon's own event loop (no thread): a scrape reads the state
between two steps of the core, as any other event does, and an idle listener costs nothing.
It answers one request per connection, HTTP/1.0 style; that is all a scraper or a health check
needs, and prometheus-client's own server would need a thread. A reload that changes
`metrics_listen` moves it (:meth:`MetricsServer.move`): the counts stay, only the address
changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .corelib import Link, ProxyState, RequestEnded
from .health import health

__all__ = ["DURATION_BUCKETS", "Metrics", "MetricsServer"]

log = logging.getLogger("client_proxy")

#: Seconds, from a reply on loopback (a millisecond) to request_timeout's default (30 s).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

_DROPPED = "dropped."


def _never() -> bool:
    return False


class _StateGauges(Collector):
    """The gauges, computed from the core's state (and whether the daemon stands by) at scrape
    time."""

    def __init__(self, state: Callable[[], ProxyState], standby: Callable[[], bool]) -> None:
        self._state = state
        self._standby = standby

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        standby = self._standby()
        session = state.session
        resources = session.resources
        yield _gauge(
            "client_proxy_outstanding_requests",
            "Requests to the service accepted and not answered yet.",
            len(state.requests),
        )
        yield _gauge(
            "client_proxy_resources_online",
            "Resources of the target account online, as the proxy knows them.",
            len(resources),
        )
        yield _gauge(
            "client_proxy_resources_eligible",
            "Online resources that take requests (their name matches resource_pattern).",
            sum(1 for r in resources if r.eligible),
        )
        yield _gauge(
            "client_proxy_link_up",
            "1 while the component stream to the server is up.",
            1 if session.link is Link.UP else 0,
        )
        yield _gauge(
            "client_proxy_subscription_approved",
            "1 once the target approved the proxy's presence subscription on this connection.",
            1 if session.subscription.in_place else 0,
        )
        yield _gauge(
            "client_proxy_standby",
            "1 while the server refuses this instance because another holds the component.",
            1 if standby else 0,
        )
        yield _gauge(
            "client_proxy_healthy",
            "1 when /healthz answers 200 ok.",
            1 if health(state, standby) is None else 0,
        )

    def describe(self) -> Iterator[Metric]:
        # Described as nothing: the registry then does not call collect() at registration,
        # before the daemon has a state to read.
        return iter(())


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class Metrics:
    """The counters and the histogram, and the registry that exposes them with the gauges and
    the library's collectors (a registry of its own, never the library's global one: two
    daemons in one process, as in tests, keep their counts apart).

    The counts are plain ints in dicts, turned into metric families at scrape time, rather than
    prometheus-client's Counter and Histogram objects: those take a lock per update (2.8 us a
    request for a counter and the histogram, measured; some 7% of the proxy's whole CPU per
    request at 100 in flight), and here every update and every scrape runs on the one event
    loop thread, so there is nothing to lock against.
    """

    def __init__(
        self, state: Callable[[], ProxyState], standby: Callable[[], bool] = _never
    ) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        #: Inbound durations: one count per bucket of DURATION_BUCKETS, then one for +Inf (not
        #: cumulative: the exposition adds them up).
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.events: dict[str, int] = {}
        self.messages = {"inbound": 0, "outbound": 0}
        self.reconnects = 0
        registry = CollectorRegistry(auto_describe=True)
        self.registry = registry
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        registry.register(_StateGauges(state, standby))
        registry.register(_Counts(self))

    def request_ended(self, ended: RequestEnded) -> None:
        requests = self.requests
        key = (ended.direction, ended.outcome)
        requests[key] = requests.get(key, 0) + 1
        duration = ended.duration
        if duration is not None and ended.direction == "inbound":
            # bisect_left: the first bucket whose bound is >= duration (Prometheus' `le`).
            self.buckets[bisect_left(DURATION_BUCKETS, duration)] += 1
            self.duration_sum += duration

    def count(self, name: str) -> None:
        events = self.events
        events[name] = events.get(name, 0) + 1

    def message(self, direction: str) -> None:
        self.messages[direction] = self.messages.get(direction, 0) + 1

    def reconnected(self) -> None:
        self.reconnects += 1

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The body and content type for a scrape with this ``Accept`` header."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _Counts(Collector):
    """:class:`Metrics`' counts as metric families, at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "client_proxy_requests",
            "IQ requests that ended, by direction (inbound: to the service; outbound: started by "
            "the target) and outcome (result, error, timeout, resource_gone, shutdown, or what "
            "refused it).",
            labels=("direction", "outcome"),
        )
        for (direction, outcome), value in sorted(m.requests.items()):
            requests.add_metric((direction, outcome), value)
        yield requests
        cumulative = list(accumulate(m.buckets))
        bounds = [*(repr(b) for b in DURATION_BUCKETS), "+Inf"]
        yield HistogramMetricFamily(
            "client_proxy_request_duration_seconds",
            "Inbound requests, from acceptance to answer (those refused at once are left out).",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=m.duration_sum,
        )
        dropped = CounterMetricFamily(
            "client_proxy_dropped",
            "Stanzas dropped rather than delivered (forged, unmatched, duplicate, late, ...).",
            labels=("reason",),
        )
        events = CounterMetricFamily(
            "client_proxy_core_events",
            "Every counter the core reports (dropped.*, refused.*, retried.*, ...), by name: "
            "the same counts as the SIGUSR1 status line.",
            labels=("name",),
        )
        for name, value in sorted(m.events.items()):
            events.add_metric((name,), value)
            if name.startswith(_DROPPED):
                dropped.add_metric((name[len(_DROPPED) :],), value)
        yield dropped
        yield events
        messages = CounterMetricFamily(
            "client_proxy_messages",
            "Messages proxied, by direction (inbound: from a user to the target; outbound: from "
            "the target to a user).",
            labels=("direction",),
        )
        for direction, value in sorted(m.messages.items()):
            messages.add_metric((direction,), value)
        yield messages
        yield CounterMetricFamily(
            "client_proxy_reconnects",
            "Connections to the server made after the first.",
            value=m.reconnects,
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())


class MetricsServer:
    """``GET /metrics`` and ``GET /healthz`` (and ``HEAD``) on ``host:port``."""

    #: A request head larger than this, or slower than TIMEOUT, is not a scraper's.
    MAX_HEAD = 16 * 1024
    TIMEOUT = 10.0

    def __init__(
        self,
        metrics: Metrics,
        state: Callable[[], ProxyState],
        host: str,
        port: int,
        standby: Callable[[], bool] = _never,
    ) -> None:
        self.metrics = metrics
        self._state = state
        self._standby = standby
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._closed = False

    async def start(self) -> None:
        """Listen on ``host:port``; OSError if it cannot."""
        self._server = await self._listen(self.host, self.port)
        log.info("metrics.listening: GET /metrics and /healthz on %s", self.address)

    async def _listen(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve, host, port, limit=self.MAX_HEAD)

    async def move(self, host: str, port: int) -> None:
        """Listen on ``host:port`` instead, and stop listening where it did (connections being
        answered there finish). If the new address cannot be bound, raise OSError and go on
        listening where it did."""
        try:
            server = await self._listen(host, port)
        except OSError as exc:
            # The same port on another address (127.0.0.1:9347 to localhost:9347, say) can be
            # taken by this very listener: let go of it and try again, and take it back if the
            # new address fails all the same.
            if exc.errno != errno.EADDRINUSE or port != self.port or self._server is None:
                raise
            self._server.close()
            self._server = None
            try:
                server = await self._listen(host, port)
            except OSError:
                await self._listen_again()
                raise
        if self._closed:  # the daemon stopped while the new listener was being opened
            server.close()
            return
        old, self._server = self._server, server
        if old is not None:
            old.close()
        before = self.address
        self.host, self.port = host, port
        log.info(
            "metrics.listening: GET /metrics and /healthz on %s (was %s)", self.address, before
        )

    async def _listen_again(self) -> None:
        try:
            self._server = await self._listen(self.host, self.port)
        except OSError as exc:  # taken in the instant it was free
            log.error("metrics.failed: cannot listen on %s again: %s", self.address, exc)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.TIMEOUT)
            status, content_type, body, head_only = self.respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, content_type, body, head_only = "400 Bad Request", "text/plain", b"", False
        except ConnectionError:
            writer.close()
            return
        except Exception:  # a bug of ours must not take the proxy down with it
            log.exception("metrics.failed: answering an HTTP request")
            status, content_type, body, head_only = (
                "500 Internal Server Error",
                "text/plain",
                b"",
                False,
            )
        writer.write(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                "Connection: close\r\n\r\n"
            ).encode("latin-1")
        )
        if not head_only:
            writer.write(body)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.drain(), self.TIMEOUT)
        writer.close()

    def respond(self, head: bytes) -> tuple[str, str, bytes, bool]:
        """Status, content type, body, and whether to leave the body out (HEAD)."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", "text/plain", b"", False
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"", False
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if path == "/metrics":
            body, content_type = self.metrics.exposition(headers.get("accept", ""))
            return "200 OK", content_type, body, head_only
        if path == "/healthz":
            reason = health(self._state(), self._standby())
            if reason is None:
                return "200 OK", "text/plain; charset=utf-8", b"ok\n", head_only
            body = f"{reason}\n".encode()
            return "503 Service Unavailable", "text/plain; charset=utf-8", body, head_only
        return "404 Not Found", "text/plain; charset=utf-8", b"not found\n", head_only
