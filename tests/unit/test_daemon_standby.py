"""The daemon as a standby: what it does when the server refuses it with the stream error
`conflict` (Prosody, while another connection holds the component), driven by hand on the real
slixmpp connection with connect and disconnect replaced (tests/integration/test_failover.py runs
it against a real Prosody).

It says `standby` once, in the log, on /healthz and to systemd (READY=1: a standby has started
as it should), tries again every STANDBY_RETRY seconds rather than with the growing backoff, and
says `standby.takeover` when the server lets it in. Any other failure ends the standby: the
backoff is for a server that is gone.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from client_proxy.core import Link
from client_proxy.shell.config import parse_settings
from client_proxy.shell.daemon import STANDBY_RETRY, Daemon
from client_proxy.shell.health import health

NS = "jabber:component:accept"
CONFLICT = {"condition": "conflict", "text": "Component already connected"}


class Transport:
    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, data: bytes) -> None:
        self.written.append(data.decode())

    def is_closing(self) -> bool:
        return False


class Notifications:
    """Stands in for systemd's socket: what the daemon told it."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def status(self, text: str) -> None:
        if not self.sent or self.sent[-1] != f"STATUS={text}":
            self.sent.append(f"STATUS={text}")

    def ready(self) -> None:
        self.sent.append("READY=1")

    def stopping(self) -> None:
        self.sent.append("STOPPING=1")


def daemon_with_fake_connection(**extra: Any) -> tuple[Daemon, Any, list[str], Notifications]:
    settings = parse_settings(
        {
            "component": "proxy.localhost",
            "server": "127.0.0.1:9",
            "secret": "s",
            "target": "svc@localhost",
            "seed": 1,
            **extra,
        }
    )
    daemon = Daemon(settings, asyncio.get_running_loop())
    xmpp: Any = daemon.xmpp
    calls: list[str] = []
    xmpp.connect = lambda *a, **k: calls.append("connect")
    xmpp.disconnect = lambda *a, **k: calls.append("disconnect")
    xmpp.cancel_connection_attempt = lambda: None
    notifications = Notifications()
    daemon.notifier = notifications  # type: ignore[assignment]
    return daemon, xmpp, calls, notifications


def refused(daemon: Daemon) -> None:
    """One attempt refused as Prosody refuses it: the stream error, then the end of stream."""
    daemon._on_stream_error(CONFLICT)
    daemon._on_disconnected("End of stream")


def retry_in(daemon: Daemon) -> float:
    assert daemon._reconnect is not None
    return daemon._reconnect.when() - daemon.loop.time()


def test_conflict_makes_a_standby_that_retries_every_second(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="client_proxy")

    async def main() -> None:
        daemon, xmpp, calls, notifications = daemon_with_fake_connection()
        for attempt in range(5):
            refused(daemon)
            assert daemon.standby
            assert retry_in(daemon) == pytest.approx(STANDBY_RETRY, abs=0.05), attempt
            daemon._reconnect.cancel()  # type: ignore[union-attr]
            daemon._connect()
        assert calls == ["connect"] * 5
        assert health(daemon.state, daemon.standby) == "standby"
        assert notifications.sent[:2] == [
            "STATUS=standby: 0 resource(s) online, 0 eligible",
            "READY=1",
        ]
        assert notifications.sent.count("READY=1") == 1

        xmpp.transport = Transport()
        daemon._on_session_start(None)
        assert not daemon.standby
        assert daemon.state.session.link is Link.UP
        assert health(daemon.state, daemon.standby) == "subscription pending"
        assert notifications.sent.count("READY=1") == 1
        assert notifications.sent[-1].startswith("STATUS=subscription pending")

    asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum(m.startswith("standby:") for m in messages) == 1, messages
    assert sum(m.startswith("standby.takeover:") for m in messages) == 1, messages
    assert not any("connection.failed" in m for m in messages), messages


def test_another_failure_ends_the_standby() -> None:
    async def main() -> None:
        daemon, _, _, notifications = daemon_with_fake_connection()
        refused(daemon)
        daemon._reconnect.cancel()  # type: ignore[union-attr]
        daemon._connect()
        daemon._on_connection_failed("connection refused")
        assert not daemon.standby
        assert health(daemon.state, daemon.standby) == "link down"
        assert notifications.sent[-1].startswith("STATUS=link down")
        # The backoff with jitter: half a second at most after the first failure.
        assert retry_in(daemon) <= 0.5

    asyncio.run(main())


def test_a_stop_while_standing_by_exits_at_once() -> None:
    async def main() -> None:
        daemon, _, _, _ = daemon_with_fake_connection()
        refused(daemon)
        daemon.request_stop("SIGTERM")
        assert daemon._reconnect is None
        assert await asyncio.wait_for(daemon.finished, 2) == 0

    asyncio.run(main())


def test_a_flush_connection_refused_by_a_standby_that_took_over_does_not_hang(
    caplog: Any,
) -> None:
    """On a stop, answers due after our end of stream go out on a fresh connection; if a
    standby has taken the component in between, Prosody refuses that connection with
    `conflict`. Each refusal counts as a failed attempt, and after the core's last one the loss
    is logged by id and the process exits."""

    async def main() -> None:
        daemon, xmpp, calls, _ = daemon_with_fake_connection(drain_timeout=1)
        xmpp.transport = Transport()
        daemon._on_session_start(None)
        daemon.request_stop("SIGTERM")
        xmpp.send_raw(xmpp.stream_footer)
        daemon._on_element(
            ET.fromstring(
                f"<iq xmlns='{NS}' type='get' id='late-3' from='user@localhost/u' "
                "to='proxy.localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
            )
        )
        xmpp.transport = None
        daemon._on_disconnected("closed by the server")
        for _ in range(3):
            await asyncio.sleep(0)
            assert calls[-1] == "connect"
            assert not daemon.finished.done()
            refused(daemon)
        assert daemon.finished.done()
        assert daemon.finished.result() == 0
        assert not daemon.standby

    asyncio.run(main())
    lost = [r.getMessage() for r in caplog.records if "stop.lost" in r.getMessage()]
    assert len(lost) == 1 and "late-3" in lost[0], lost
