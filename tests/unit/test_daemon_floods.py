"""Floods through the daemon's read path (the real slixmpp component on a fake transport).

- the target announcing more resources than the core tracks (MAX_RESOURCES): the extra ones
  are ignored, logged and counted, and requests still go to the tracked ones;
- one resource's presence toggled thousands of times: nothing grows, every request is
  answered once;
- a requester cycling through fresh resource names: the per-requester limits are per account
  (bare JID), so fresh names gain nothing, while other accounts keep their own allowance.

`just abuse` runs the same loads against a real Prosody and gives the figures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import pytest
from client_proxy.core import Link, TimePassed
from client_proxy.core._state import MAX_RESOURCES
from client_proxy.shell.config import parse_settings
from client_proxy.shell.daemon import Daemon
from client_proxy.testing.fake_stream import FakeTransport, feed

NS = "jabber:component:accept"
PROXY = "proxy.localhost"
TARGET = "svc@localhost"
HEADER = (
    f"<?xml version='1.0'?><stream:stream xmlns='{NS}' "
    f"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='{PROXY}'>"
)


async def connected(**extra: object) -> tuple[Daemon, Any, FakeTransport]:
    settings = parse_settings(
        {
            "component": PROXY,
            "server": "127.0.0.1:9",
            "secret": "s",
            "target": TARGET,
            "seed": 1,
            **extra,
        }
    )
    daemon = Daemon(settings, asyncio.get_running_loop())
    xmpp: Any = daemon.xmpp
    transport = FakeTransport()
    xmpp.connection_made(transport)
    feed(xmpp, HEADER + f"<handshake/><presence type='subscribed' from='{TARGET}' to='{PROXY}'/>")
    assert daemon.state.session.link is Link.UP
    transport.writes.clear()
    return daemon, xmpp, transport


def request(requester: str, iq_id: str) -> str:
    return (
        f"<iq type='get' id='{iq_id}' from='{requester}' to='{PROXY}'>"
        f"<q xmlns='urn:example:flood'/></iq>"
    )


def answers(transport: FakeTransport) -> Counter[tuple[str, str]]:
    return Counter(
        (s.get("to") or "", s.get("id") or "")
        for s in transport.stanzas()
        if s.tag == f"{{{NS}}}iq" and s.get("type") in ("result", "error")
    )


def test_resources_beyond_the_limit_are_ignored_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    extra = 6

    async def main() -> None:
        daemon, xmpp, transport = await connected()
        with caplog.at_level(logging.INFO, logger="client_proxy"):
            feed(
                xmpp,
                "".join(
                    f"<presence from='{TARGET}/r{n:04}' to='{PROXY}'/>"
                    for n in range(MAX_RESOURCES + extra)
                ),
            )
        assert len(daemon.state.session.resources) == MAX_RESOURCES
        assert daemon.counters["ignored.too_many_resources"] == extra
        ignored = [r.getMessage() for r in caplog.records if "resource.ignored" in r.getMessage()]
        assert len(ignored) == extra
        assert (
            f"{TARGET}/r{MAX_RESOURCES:04} ignored: already tracking {MAX_RESOURCES}"
            in (ignored[0])
        )
        # The one over the limit is never chosen; the tracked ones serve.
        feed(xmpp, "".join(request("user@localhost/u", f"q{n}") for n in range(200)))
        forwarded = [s.get("to") or "" for s in transport.stanzas()]
        assert len(forwarded) == 200
        tracked = {f"{TARGET}/r{n:04}" for n in range(MAX_RESOURCES)}
        assert set(forwarded) <= tracked
        # When a tracked one leaves, a newcomer can take its place.
        feed(xmpp, f"<presence type='unavailable' from='{TARGET}/r0000' to='{PROXY}'/>")
        feed(xmpp, f"<presence from='{TARGET}/late' to='{PROXY}'/>")
        assert "late" in daemon.state.session.online

    asyncio.run(main())


def test_presence_churn_of_one_resource_keeps_state_small_and_answers_once() -> None:
    toggles = 10_000

    async def main() -> None:
        daemon, xmpp, transport = await connected(rate_limit=0)
        feed(xmpp, f"<presence from='{TARGET}/steady' to='{PROXY}'/>")
        started = time.perf_counter()
        for n in range(toggles // 100):
            churn = "".join(
                f"<presence from='{TARGET}/churner' to='{PROXY}'><priority>{p}</priority>"
                f"</presence><presence type='unavailable' from='{TARGET}/churner' to='{PROXY}'/>"
                for p in range(50)
            )
            feed(xmpp, churn + request("user@localhost/u", f"q{n}"))
        took = time.perf_counter() - started
        print(f"\n{toggles:,} presence stanzas and 100 requests: {took:.2f} s in the read path")
        assert [r.name for r in daemon.state.session.resources] == ["steady"]
        outstanding = len(daemon.state.requests)
        assert outstanding <= 100
        # The target answers nothing: the deadlines pass; every request gets one answer.
        daemon.apply(TimePassed(asyncio.get_running_loop().time() + 86_400))
        got = answers(transport)
        assert got == Counter({("user@localhost/u", f"q{n}"): 1 for n in range(100)})
        assert len(daemon.state.requests) == 0

    asyncio.run(main())


def test_fresh_resource_names_share_their_accounts_limits() -> None:
    sessions, each, cap, per_account = 30, 120, 2_000, 100

    async def main() -> None:
        daemon, xmpp, transport = await connected(
            rate_limit=0, max_outstanding=cap, max_per_requester=per_account
        )
        feed(xmpp, f"<presence from='{TARGET}/silent' to='{PROXY}'/>")
        for s in range(sessions):
            feed(xmpp, "".join(request(f"user@localhost/fresh{s}", f"q{n}") for n in range(each)))
        # All the resources of user@localhost together are held to per_account.
        assert len(daemon.state.requests) == per_account
        refused = answers(transport)
        assert sum(refused.values()) == sessions * each - per_account
        assert set(refused) == {
            (f"user@localhost/fresh{s}", f"q{n}")
            for s in range(sessions)
            for n in range(each)
            if s > 0 or n >= per_account
        }
        # Another account still has its whole allowance.
        feed(xmpp, "".join(request("other@localhost/r", f"q{n}") for n in range(each)))
        assert len(daemon.state.requests) == 2 * per_account
        daemon.apply(TimePassed(asyncio.get_running_loop().time() + 86_400))
        got = answers(transport)
        expected = Counter(
            {(f"user@localhost/fresh{s}", f"q{n}"): 1 for s in range(sessions) for n in range(each)}
        )
        expected.update({("other@localhost/r", f"q{n}"): 1 for n in range(each)})
        assert got == expected

    asyncio.run(main())
