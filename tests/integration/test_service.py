"""Running client-proxy as a service, against the session's real servers (Prosody and ejabberd):
metrics (requests by outcome, messages by direction) and health over HTTP, the sd_notify
messages on a real datagram socket, SIGHUP reloads (policy at once, a reconnect for a new
server or secret, the HTTP listener moved, bad files, a new target and a port in use refused, a
storm of them survived), exit 78 when the first handshake is refused, and JSON log lines."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from client_proxy.testing.prosody import free_port
from proxy_daemon import Daemon
from proxy_env import PROMPT, PROXY_DOMAIN, SECRET, ProxyEnv, wait_for
from service_checks import NotifySocket, dropped, get, health, scrape, value, wait_health

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_count_requests_by_outcome(env: ProxyEnv) -> None:
    """Scraped before and after a known number of requests: 5 answered with a result and 3 with
    the target's error add exactly that to requests_total by outcome and 8 to the duration
    histogram; a forged reply adds one to dropped_total; the gauges say what is so; the process
    collector is there; OpenMetrics is served when the scraper asks for it."""
    port = free_port()

    async def main() -> None:
        daemon = await env.ready_daemon(metrics_listen=f"127.0.0.1:{port}")
        (alpha,) = await env.online(daemon, "alpha")
        user = await env.requester()
        await wait_for(lambda: daemon.matching("subscription.approved"), "approval")
        before = await scrape(port)

        ids = [user.request(PROXY_DOMAIN) for _ in range(5)]
        await user.all_replies(ids, PROMPT)
        alpha.mode = "error"
        ids = [user.request(PROXY_DOMAIN) for _ in range(3)]
        await user.all_replies(ids, PROMPT)
        alpha.send_raw_iq(to=f"{PROXY_DOMAIN}/{user.boundjid}", id="forged")
        after = await scrape(port)
        deadline = time.monotonic() + PROMPT
        while dropped(after) == dropped(before) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            after = await scrape(port)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        requests = "client_proxy_requests_total"
        assert delta(requests, direction="inbound", outcome="result") == 5
        assert delta(requests, direction="inbound", outcome="error") == 3
        total = sum(v for (n, _), v in after.items() if n == requests) - sum(
            v for (n, _), v in before.items() if n == requests
        )
        assert total == 8
        assert delta("client_proxy_request_duration_seconds_count") == 8
        assert dropped(after) == dropped(before) + 1
        assert value(after, "client_proxy_outstanding_requests") == 0
        assert value(after, "client_proxy_resources_online") == 1
        assert value(after, "client_proxy_resources_eligible") == 1
        assert value(after, "client_proxy_link_up") == 1
        assert value(after, "client_proxy_subscription_approved") == 1
        assert value(after, "client_proxy_reconnects_total") == 0
        assert value(after, "client_proxy_messages_total", direction="inbound") == 0
        assert value(after, "process_cpu_seconds_total") > 0

        status, content_type, body = await get(
            port, "/metrics", accept="application/openmetrics-text; version=1.0.0"
        )
        assert status == 200
        assert content_type.startswith("application/openmetrics-text"), content_type
        assert body.rstrip().endswith("# EOF")
        assert (await get(port, "/nowhere"))[0] == 404

    env.run(main)


def test_messages_counted_by_direction(env: ProxyEnv) -> None:
    """messages_total by direction, against what the server delivered: five messages from two
    users to the service reach the target (inbound +5); three from the target reach the users,
    and one to a user who does not exist leaves the proxy all the same (outbound +4); the
    server's error for that one, relayed to the resource that sent it, is not a message proxied
    (neither count moves for it); requests are not messages."""
    port = free_port()

    async def main() -> None:
        daemon = await env.ready_daemon(metrics_listen=f"127.0.0.1:{port}")
        (alpha,) = await env.online(daemon, "alpha")
        users = [await env.requester(resource="one"), await env.requester(resource="two")]
        before = await scrape(port)

        for n in range(5):
            users[n % 2].send_message(mto=PROXY_DOMAIN, mbody=f"to the service {n}", mtype="chat")
        await wait_for(lambda: len(alpha.messages) == 5, "five messages at the target")
        for n in range(3):
            alpha.send_message_to(f"{PROXY_DOMAIN}/{users[n % 2].boundjid}", f"to a user {n}")
        alpha.send_message(
            mto=f"{PROXY_DOMAIN}/nobody-{env.target}/x", mbody="anyone there?", mtype="normal"
        )
        await wait_for(
            lambda: (
                sum(len(u.messages) for u in users) == 3
                and any('type="error"' in m for m in alpha.messages)
            ),
            "three messages at the users and the bounce at the target",
        )
        rid = users[0].request(PROXY_DOMAIN)
        await users[0].reply(rid, PROMPT)
        after = await scrape(port)

        def delta(direction: str) -> float:
            name = "client_proxy_messages_total"
            return value(after, name, direction=direction) - value(
                before, name, direction=direction
            )

        assert delta("inbound") == 5
        assert delta("outbound") == 4
        assert [len(u.messages) for u in users] == [2, 1]
        assert len(alpha.messages) == 6

    env.run(main)


def test_healthz_through_its_states(env: ProxyEnv) -> None:
    """/healthz says why the proxy cannot serve, in turn: link down (no server to reach),
    subscription pending (no resource has approved yet), no eligible resource (only a resource
    outside resource_pattern), ok (200), stopping (during the drain)."""
    down_port, port = free_port(), free_port()

    async def main() -> None:
        nowhere = env.start_daemon(
            server=f"127.0.0.1:{free_port()}", metrics_listen=f"127.0.0.1:{down_port}"
        )
        await nowhere.wait_log("metrics.listening")
        await wait_health(down_port, (503, "link down"))

        daemon = await env.ready_daemon(
            metrics_listen=f"127.0.0.1:{port}", resource_pattern="worker-.*", drain_timeout=3
        )
        await wait_health(port, (503, "subscription pending"))
        await env.online(daemon, "other")
        await wait_health(port, (503, "no eligible resource"))
        (worker,) = await env.online(daemon, "worker-1", mode="hold")
        await wait_health(port, (200, "ok"))

        user = await env.requester()
        rid = user.request(PROXY_DOMAIN)
        await worker.wait_requests(1, PROMPT)
        daemon.signal(signal.SIGTERM)
        await wait_health(port, (503, "stopping"))
        worker.answer(rid)
        assert (await user.reply(rid, PROMPT)).type == "result"
        assert await daemon.wait_exit(10) == 0

    env.run(main)


# -- sd_notify ---------------------------------------------------------------------------------


def test_sd_notify_messages_in_order(env: ProxyEnv, tmp_path: Path) -> None:
    """With NOTIFY_SOCKET pointing at a socket the test opened: STATUS while it is not ready,
    READY=1 after the handshake, STATUS=ready once a resource is online, WATCHDOG=1 at half of
    WATCHDOG_USEC, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 at SIGTERM, and nothing
    after the process exits but what the stop said."""
    notify = NotifySocket(tmp_path / "notify.sock")

    async def main() -> None:
        try:
            daemon = env.start_daemon(
                env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
            )
            await daemon.wait_log("connection.up")
            await env.online(daemon, "alpha")
            await notify.wait(lambda m: any(x.startswith("STATUS=ready") for x in m), "ready")
            await notify.wait(lambda m: m.count("WATCHDOG=1") >= 3, "three watchdog beats")
            mark = daemon.mark()
            env.write_config(env.settings(routing="round-robin"), "proxy-1.toml")
            daemon.signal(signal.SIGHUP)
            await daemon.wait_log("config.reloaded", since=mark)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait_exit(10) == 0
            messages = [m for m in notify.read() if m != "WATCHDOG=1"]
            firsts = [m.split("\n")[0] for m in messages]
            ready = firsts.index("READY=1")
            assert messages[0].startswith("STATUS=subscription pending"), messages
            assert any(m.startswith("STATUS=ready") for m in messages[ready:]), messages
            reloading = firsts.index("RELOADING=1")
            assert reloading > ready
            assert "MONOTONIC_USEC=" in messages[reloading]
            assert firsts[reloading + 1] == "READY=1", messages
            stopping = firsts.index("STOPPING=1")
            assert stopping > reloading
            assert all(m.startswith("STATUS=") for m in messages[stopping + 1 :]), messages
        finally:
            notify.close()

    env.run(main)


# -- SIGHUP ------------------------------------------------------------------------------------


def test_sighup_switches_routing_with_requests_in_flight(env: ProxyEnv) -> None:
    """resource_pattern = "alpha", then a SIGHUP to "beta" while ten requests are in flight at
    alpha: those are answered by alpha, the next ten go to beta; every request gets exactly one
    answer. Then a file that is not valid TOML, one that fails validation and one that changes
    the target are refused with their reason and change nothing; fifty SIGHUPs in a row are
    survived with requests flowing."""

    async def main() -> None:
        daemon = await env.ready_daemon(resource_pattern="alpha")
        config = daemon.config_path
        alpha, beta = await env.online(daemon, "alpha", "beta")
        alpha.delay = beta.delay = 0.5
        user = await env.requester()
        first = [user.request(PROXY_DOMAIN, type="set") for _ in range(10)]
        await alpha.wait_requests(10, PROMPT)
        mark = daemon.mark()
        config.write_text(config.read_text().replace('"alpha"', '"beta"'))
        daemon.signal(signal.SIGHUP)
        (line,) = await daemon.wait_log("config.reloaded", since=mark)
        assert "resource_pattern" in line, line
        second = [user.request(PROXY_DOMAIN, type="set") for _ in range(10)]
        replies = await user.all_replies(first + second, PROMPT)
        assert all(r.type == "result" for r in replies.values())
        assert [r.original for r in alpha.requests] == first
        assert [r.original for r in beta.requests] == second

        good = config.read_text()
        for bad, reason in (
            ("routing = [", "not valid TOML"),
            (good + "max_outstanding = -1\n", "max_outstanding"),
            (good.replace(env.target, "someone-else@localhost"), "target cannot change"),
        ):
            mark = daemon.mark()
            config.write_text(bad)
            daemon.signal(signal.SIGHUP)
            (line,) = await daemon.wait_log("config.rejected", since=mark)
            assert reason in line, line
        config.write_text(good)

        mark = daemon.mark()
        third = []
        for _ in range(50):
            daemon.signal(signal.SIGHUP)
            third.append(user.request(PROXY_DOMAIN))
            await asyncio.sleep(0.01)
        await daemon.wait_log("config.reloaded", since=mark, count=50)
        replies = await user.all_replies(third, PROMPT)
        assert all(r.type == "result" for r in replies.values())
        assert daemon.process.poll() is None
        assert [r.original for r in beta.requests] == second + third
        await asyncio.sleep(0.3)
        assert user.unsolicited() == []

    env.run(main)


def test_sighup_new_server_and_secret_reconnect_keeping_requests(env: ProxyEnv) -> None:
    """A reload that changes `server` reconnects at once; requests outstanding across it are
    answered once their resource replies. A reload to a wrong secret after the first connection
    is retried, not fatal; the right one again connects and serves."""

    async def main() -> None:
        daemon = await env.ready_daemon()
        config = daemon.config_path
        (alpha,) = await env.online(daemon, "alpha", mode="hold")
        user = await env.requester()
        ids = [user.request(PROXY_DOMAIN) for _ in range(3)]
        await alpha.wait_requests(3, PROMPT)

        mark = daemon.mark()
        config.write_text(config.read_text().replace('"127.0.0.1:', '"localhost:'))
        daemon.signal(signal.SIGHUP)
        (line,) = await daemon.wait_log("config.reloaded", since=mark)
        assert "server" in line, line
        await daemon.wait_log("connection.up", since=mark)
        await env.wait_resource(daemon, "resource.online", "alpha", since=mark)
        for rid in ids:
            alpha.answer(rid)
        replies = await user.all_replies(ids, PROMPT)
        assert all(r.type == "result" for r in replies.values())

        good = config.read_text()
        mark = daemon.mark()
        config.write_text(good.replace(SECRET, "not-the-secret"))
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("connection.failed", containing="not-authorized", since=mark)
        await asyncio.sleep(1.0)
        assert daemon.process.poll() is None, daemon.tail()
        config.write_text(good)
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("connection.up", since=mark, timeout=20)
        await env.wait_resource(daemon, "resource.online", "alpha", since=mark)
        alpha.mode = "echo"
        rid = user.request(PROXY_DOMAIN)
        assert (await user.reply(rid, PROMPT)).type == "result"
        await asyncio.sleep(0.3)
        assert user.unsolicited() == []

    env.run(main)


def refused(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sighup_moves_metrics_listen(env: ProxyEnv) -> None:
    """A reload that changes metrics_listen moves the listener at once: the new port serves
    /healthz and the same counts, the old one refuses connections. A port that something else
    holds refuses the whole file (one config.rejected line with the reason; the listener stays,
    and the file's other change is not applied); the same port on another address (127.0.0.1
    to localhost) works though the listener itself held it; left out, nothing listens; set
    again, it listens again, counting from zero. Nothing is left for a restart."""
    first, second = free_port(), free_port()

    async def main() -> None:
        daemon = await env.ready_daemon(metrics_listen=f"127.0.0.1:{first}")
        await env.online(daemon, "alpha")
        user = await env.requester()
        await user.all_replies([user.request(PROXY_DOMAIN) for _ in range(3)], PROMPT)
        await wait_health(first, (200, "ok"))

        def results(samples: dict[Any, float]) -> float:
            name = "client_proxy_requests_total"
            return value(samples, name, direction="inbound", outcome="result")

        async def reload(code: str, **overrides: Any) -> list[str]:
            mark = daemon.mark()
            env.write_config(env.settings(**overrides), daemon.config_path.name)
            daemon.signal(signal.SIGHUP)
            await daemon.wait_log(code, since=mark)
            await asyncio.sleep(0.2)  # anything else this reload logs
            return daemon.snapshot()[mark:]

        lines = await reload("config.reloaded", metrics_listen=f"127.0.0.1:{second}")
        assert any("changed metrics_listen" in line for line in lines), lines
        assert await health(second) == (200, "ok")
        assert results(await scrape(second)) == 3
        assert refused(first)

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            elsewhere = taken.getsockname()[1]
            lines = await reload(
                "config.rejected", metrics_listen=f"127.0.0.1:{elsewhere}", routing="round-robin"
            )
        errors = [line for line in lines if " ERROR " in line]
        assert len(errors) == 1 and "address already in use" in errors[0], lines
        assert f"metrics_listen 127.0.0.1:{elsewhere}" in errors[0], errors
        assert not [line for line in lines if "config.reloaded" in line], lines
        assert await health(second) == (200, "ok")

        lines = await reload(
            "config.reloaded", metrics_listen=f"localhost:{second}", routing="round-robin"
        )
        assert any("changed metrics_listen, routing" in line for line in lines), lines
        assert await health(second) == (200, "ok")
        assert results(await scrape(second)) == 3

        await reload("config.reloaded", routing="round-robin")
        assert refused(second)
        await reload("config.reloaded", metrics_listen=f"127.0.0.1:{first}")
        assert await health(first) == (200, "ok")
        assert results(await scrape(first)) == 0
        assert not daemon.matching("config.pending")
        assert daemon.process.poll() is None

    env.run(main)


# -- exit codes, logs --------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["secret", "component"])
def test_refused_first_handshake_exits_78(env: ProxyEnv, wrong: str) -> None:
    """A wrong secret (not-authorized), or a component the server does not know: one error line
    naming the problem, and exit 78 (EX_CONFIG) so that systemd stops restarting."""

    async def main() -> None:
        if wrong == "secret":
            daemon = env.start_daemon(secret="not-the-secret")
        else:
            daemon = env.start_daemon(component="unknown.localhost")
        assert await daemon.wait_exit(20) == 78, daemon.tail()
        errors = [line for line in daemon.snapshot() if " ERROR " in line]
        assert len(errors) == 1, errors
        assert "connection.refused" in errors[0]
        assert ("not-authorized" if wrong == "secret" else "unknown.localhost") in errors[0]

    env.run(main)


def test_json_log_lines_parse(env: ProxyEnv) -> None:
    """log_format = "json": every line on stderr is one JSON object with time, level, code and
    message; the reload's line carries the keys that changed as a field."""

    async def main() -> None:
        daemon = Daemon(
            env.write_config(env.settings(log_format="json"), "json.toml"), log_level="info"
        )
        env.daemons.append(daemon)
        await daemon.wait_log('"connection.up"')
        await env.online(daemon, "alpha")
        env.write_config(env.settings(log_format="json", routing="sticky"), "json.toml")
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log('"config.reloaded"')
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(10) == 0
        lines = [json.loads(line) for line in daemon.snapshot()]
        for line in lines:
            assert {"time", "level", "code", "message"} <= set(line), line
        codes = [line["code"] for line in lines]
        assert "connection.up" in codes and "resource.online" in codes, codes
        (reloaded,) = (line for line in lines if line["code"] == "config.reloaded")
        assert reloaded["changed"] == ["routing"]

    env.run(main)
