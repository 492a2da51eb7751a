"""The daemon's one timer for the core's deadlines.

The core's next deadline moves with almost every step (with one request at a time, each new
request is due request_timeout after it came in, and its answer clears the deadline). The daemon
makes a timer only when the deadline comes earlier than the armed one; a timer that fires before
the deadline it then finds re-arms for it. These tests drive a real event loop (asyncio's and
uvloop's) with a short request_timeout: requests the target leaves unanswered must be answered
at their own deadlines, never before, and one request at a time must not make a timer each.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from client_proxy.core._seal import original_of
from client_proxy.shell.config import parse_settings
from client_proxy.shell.daemon import Daemon

NS = "jabber:component:accept"
PROXY = "proxy.localhost"
TARGET = "svc@localhost"
USER = "user@localhost/u"
TIMEOUT = 0.3


class FakeTransport:
    """Keeps what is written, with the loop's time of writing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.written: list[tuple[float, ET.Element]] = []

    def write(self, data: bytes) -> None:
        now = self.loop.time()
        for element in ET.fromstring(f"<s xmlns='{NS}'>{data.decode()}</s>"):
            self.written.append((now, element))

    def is_closing(self) -> bool:
        return False


def stanza(text: str) -> ET.Element:
    return ET.fromstring(f"<s xmlns='{NS}'>{text}</s>")[0]


def request(iq_id: str) -> ET.Element:
    return stanza(
        f"<iq type='get' id='{iq_id}' from='{USER}' to='{PROXY}'><ping xmlns='urn:xmpp:ping'/></iq>"
    )


async def ready_daemon(drain: float = 5.0) -> tuple[Daemon, FakeTransport, list[float]]:
    """A daemon whose target has two resources online, and the times its timers were made for."""
    loop = asyncio.get_running_loop()
    settings = parse_settings(
        {
            "component": PROXY,
            "server": "127.0.0.1:9",
            "secret": "s",
            "target": TARGET,
            "request_timeout": TIMEOUT,
            "retry_get": False,
            "drain_timeout": drain,
            # No rate limit, whose sweeps would be deadlines of their own.
            "rate_limit": 0,
            "seed": 1,
        }
    )
    daemon = Daemon(settings, loop)
    xmpp: Any = daemon.xmpp
    xmpp.transport = transport = FakeTransport(loop)
    xmpp.disconnect = lambda *a, **k: None
    daemon._on_session_start(None)
    for text in (
        f"<presence type='subscribed' from='{TARGET}' to='{PROXY}'/>",
        f"<presence from='{TARGET}/a' to='{PROXY}'/>",
        f"<presence from='{TARGET}/b' to='{PROXY}'/>",
    ):
        daemon._on_element(stanza(text))
    armed: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
        if callback == daemon._on_timer:
            armed.append(when)
        return call_at(when, callback, *args, **kw)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    transport.written.clear()
    return daemon, transport, armed


def answers_to_user(transport: FakeTransport) -> dict[str, tuple[float, ET.Element]]:
    return {
        str(element.get("id")): (at, element)
        for at, element in transport.written
        if element.get("to") == USER
    }


def forwarded(transport: FakeTransport, iq_id: str) -> ET.Element:
    """The request the proxy forwarded for the user's ``iq_id`` (the only one so far)."""
    (element,) = [
        element
        for _, element in transport.written
        if element.get("type") == "get" and element.get("to", "").startswith(TARGET)
        if element.get("from", "").endswith(f"/{USER}")
        if original_of(element.get("id", "")) == iq_id  # sealed, carrying the user's id
    ]
    return element


def answer(daemon: Daemon, transport: FakeTransport, iq_id: str) -> None:
    """The target's result for the forwarded ``iq_id``."""
    out = forwarded(transport, iq_id)
    daemon._on_element(
        stanza(
            f"<iq type='result' id='{out.get('id')}' from='{out.get('to')}' "
            f"to='{out.get('from')}'/>"
        )
    )


def run(main: Callable[[], Awaitable[None]], loop: str) -> None:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())  # type: ignore[arg-type]
    else:
        asyncio.run(main())


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


@LOOPS
def test_one_request_at_a_time_makes_one_timer(loop: str) -> None:
    async def main() -> None:
        daemon, transport, armed = await ready_daemon()
        for n in range(20):
            daemon._on_element(request(f"q{n}"))
            answer(daemon, transport, f"q{n}")
            await asyncio.sleep(0)
        answers = answers_to_user(transport)
        assert [answers[f"q{n}"][1].get("type") for n in range(20)] == ["result"] * 20
        # Each request moved the deadline later (and each answer cleared it): one timer.
        assert len(armed) == 1, armed

    run(main, loop)


@LOOPS
def test_each_request_times_out_at_its_own_deadline(loop: str) -> None:
    async def main() -> None:
        daemon, transport, armed = await ready_daemon()
        loop = daemon.loop
        sent = {}
        for iq_id in ("first", "second", "third"):
            sent[iq_id] = loop.time()
            daemon._on_element(request(iq_id))
            await asyncio.sleep(TIMEOUT / 4)
        # The first request's deadline is the earliest: its timer stands.
        assert len(armed) == 1, armed

        await asyncio.sleep(TIMEOUT + 0.2)
        answers = answers_to_user(transport)
        assert sorted(answers) == ["first", "second", "third"], transport.written
        for iq_id, (at, element) in answers.items():
            assert element.get("type") == "error", ET.tostring(element)
            # Due request_timeout after it came in; loop clocks may round by a millisecond.
            assert at >= sent[iq_id] + TIMEOUT - 0.002, (iq_id, at - sent[iq_id])
            assert at <= sent[iq_id] + TIMEOUT + 0.1, (iq_id, at - sent[iq_id])
        # After the first expiry the timer re-armed once per remaining deadline, no more.
        assert len(armed) <= 3, armed

    run(main, loop)


@LOOPS
def test_a_timer_left_armed_after_the_last_answer_does_nothing(loop: str) -> None:
    async def main() -> None:
        daemon, transport, armed = await ready_daemon()
        daemon._on_element(request("q"))
        answer(daemon, transport, "q")
        ((_, result),) = answers_to_user(transport).values()
        assert result.get("type") == "result"
        written = len(transport.written)

        await asyncio.sleep(TIMEOUT + 0.1)
        assert len(armed) == 1, armed
        assert len(transport.written) == written, transport.written[written:]
        assert daemon._timer is None

    run(main, loop)


@LOOPS
def test_an_earlier_deadline_gets_a_timer_of_its_own(loop: str) -> None:
    async def main() -> None:
        # A stop drains for less time than the outstanding request has left: the core's
        # deadline moves earlier, and the request is answered when the drain ends.
        drain = TIMEOUT / 3
        daemon, transport, armed = await ready_daemon(drain=drain)
        loop = daemon.loop
        daemon._on_element(request("held"))
        assert len(armed) == 1
        stopped = loop.time()
        daemon.request_stop("SIGTERM")
        assert len(armed) == 2 and armed[1] < armed[0], armed
        await asyncio.sleep(drain + 0.1)
        at, answer = answers_to_user(transport)["held"]
        assert answer.get("type") == "error", ET.tostring(answer)
        assert stopped + drain - 0.002 <= at < stopped + TIMEOUT, at - stopped

    run(main, loop)
