"""The operator approves the proxy's subscription on the server with the commands the README
gives for that server, read from the README and run line by line against this run's server,
and the proxy becomes ready. The target's resources never approve anything themselves."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

import pytest
from client_proxy.testing.ejabberd import Ejabberd
from client_proxy.testing.prosody import Prosody, free_port
from proxy_daemon import Daemon
from proxy_env import HOST, PROMPT, PROXY_DOMAIN, ProxyEnv
from service_checks import wait_health

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def readme_commands(program: str, env: ProxyEnv) -> list[list[str]]:
    """The lines of the shell block that runs `program` in the README's "Approving the
    subscription" section, each split as a shell would, with the README's example names made
    this run's."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Approving the subscription") :]
    section = section[: section.index("\n### ")]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    (block,) = [b for b in blocks if re.search(rf"^\s*{program} ", b, re.MULTILINE)]
    user, _, _ = env.target.partition("@")
    names = {
        "proxy.example.org": PROXY_DOMAIN,
        "svc@example.org": env.target,
        "svc": user,
        "example.org": HOST,
    }
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [[names.get(word, word) for word in line] for line in lines if line]


def test_operator_approves_the_subscription_as_the_readme_says(env: ProxyEnv) -> None:
    """Before: the target's resource is online, but it leaves the proxy's request unanswered and
    /healthz says `subscription pending`. Then each line of the README's block for this server
    (Prosody: prosodyctl mod_roster_command with the server's own config, and a restart of
    Prosody; ejabberd: ejabberdctl delete_rosteritem and add_rosteritem, client-proxy left
    running). After: /healthz says ok and a request is answered by the resource, which
    approved nothing."""
    port = free_port()

    async def main() -> None:
        daemon = await env.ready_daemon(metrics_listen=f"127.0.0.1:{port}")
        alpha = await env.resource("alpha", approve=False)
        await alpha.wait_condition(lambda: alpha.subscribe_requests, PROMPT, "the request")
        await wait_health(port, (503, "subscription pending"))

        program = "prosodyctl" if isinstance(env.server, Prosody) else "ejabberdctl"
        for command in readme_commands(program, env):
            daemon = await run_as_the_operator(env, daemon, command)
        if alpha.transport is None:  # a restart of the server ended its session: back again
            alpha = await env.resource("alpha", approve=False)

        await daemon.wait_log("subscription.approved", timeout=15)
        await env.wait_resource(daemon, "resource.online", "alpha")
        await wait_health(port, (200, "ok"))
        user = await env.requester()
        reply = await user.reply(user.request(PROXY_DOMAIN), PROMPT)
        assert reply.type == "result" and reply.from_ == PROXY_DOMAIN
        assert len(alpha.requests) == 1
        assert alpha.approved == []

    env.run(main)


async def run_as_the_operator(env: ProxyEnv, daemon: Daemon, command: list[str]) -> Daemon:
    """Do what one line of the README's block does, to this run's server and daemon; the
    daemon that runs afterwards."""
    server = env.server
    if command == ["systemctl", "restart", "prosody"]:
        assert isinstance(server, Prosody)
        mark = daemon.mark()
        await asyncio.to_thread(server.restart)
        await daemon.wait_log("connection.up", since=mark, timeout=30)
    elif command[0] == "prosodyctl":
        assert isinstance(server, Prosody)
        await asyncio.to_thread(server.prosodyctl, *command[1:])
    elif command[0] == "ejabberdctl":
        assert isinstance(server, Ejabberd)
        result = await asyncio.to_thread(server.ctl_command, *command[1:])
        assert result.returncode == 0, result
    else:
        raise AssertionError(f"the README's block has a line this test cannot run: {command}")
    return daemon
