"""docs/deploy.md's Jitsi Meet recipe, as written: its Lua component block, its client-proxy
config and its commands that approve the subscription are read from the page (with
`meet.example.org` as `meet.test`, and this run's ports and secret), a Prosody of its own serves
`meet.test` and `auth.meet.test`, and what the Jitsi Meet web client sends to the focus goes
through client-proxy to a stand-in for jicofo."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import xml.etree.ElementTree as ET
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from client_proxy.testing.prosody import Prosody, free_port, prosody_available
from proxy_daemon import Daemon
from roster_command import roster_command_plugins
from service_checks import wait_health
from xmpp_clients import Requester, TargetResource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "meet.test"
FOCUS_NS = "http://jitsi.org/protocol/focus"
PASSWORD = "password"
SECRET = "a long random secret"


def recipe_blocks() -> tuple[str, str, str, str]:
    """The recipe's global Lua lines (the component listener), its external component, its
    client-proxy config, and its shell lines that approve the subscription."""
    page = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    recipe = page[page.index("## Jitsi Meet") :].replace("meet.example.org", DOMAIN)
    blocks = re.findall(r"```(\w+)\n(.*?)```", recipe, re.DOTALL)
    (listener,) = [b for lang, b in blocks if lang == "lua" and "component_ports" in b]
    (component,) = [b for lang, b in blocks if lang == "lua" and "component_secret" in b]
    (toml,) = [b for lang, b in blocks if lang == "toml" and "component =" in b]
    (approval,) = [b for lang, b in blocks if lang == "sh" and "mod_roster_command" in b]
    return listener, component, toml, approval


class JitsiProsody(Prosody):
    """The session Prosody's settings, with Jitsi's virtual hosts and the recipe's lines: the
    listener in the global section, the component after the hosts."""

    def config_text(self) -> str:
        listener, component, _, _ = recipe_blocks()
        # The recipe names the standard port; this run has a free one.
        listener = listener.replace("{ 5347 }", f"{{ {self.component_port} }}")
        base = re.sub(r"component_(ports|interfaces) = .*\n", "", super().config_text())
        globals_, _, _ = base.partition(f'VirtualHost "{self.host}"')
        return f"{globals_}{listener}\n{_vhosts()}\n{component}"


def _vhosts() -> str:
    # Jitsi serves its users on meet.<domain> (anonymous there; an account here, since the
    # recipe does not touch it) and jicofo's account on auth.<domain>.
    return f'VirtualHost "{DOMAIN}"\n\nVirtualHost "auth.{DOMAIN}"\n'


@pytest.fixture
def jitsi(tmp_path: Path) -> Generator[JitsiProsody, None, None]:
    if not prosody_available():
        pytest.skip("prosody is not installed (scripts/bootstrap installs it)")
    server = JitsiProsody(tmp_path / "prosody", host=DOMAIN, plugin_paths=roster_command_plugins())
    server.register("focus", f"auth.{DOMAIN}", PASSWORD)
    server.register("web", DOMAIN, PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Jicofo(TargetResource):
    """A stand-in for jicofo: answers `<conference/>` as jicofo does, reading the user's address
    from the translated `from` (everything after the first '/', jicofo's client-proxy rule)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.users: list[str] = []

    def on_iq(self, iq: Any) -> None:
        conference = iq.xml.find(f"{{{FOCUS_NS}}}conference")
        sender = str(iq["from"])
        if iq["type"] != "set" or conference is None or not self._from_proxy(sender):
            return
        self.users.append(sender.split("/", 1)[1])
        reply = iq.reply(clear=True)
        answer = ET.Element(
            f"{{{FOCUS_NS}}}conference",
            {
                "ready": "true",
                "room": conference.get("room", ""),
                "focusjid": f"focus@auth.{DOMAIN}",
            },
        )
        reply.append(answer)
        reply.send()


def test_jitsi_meet_focus_behind_client_proxy(jitsi: JitsiProsody, tmp_path: Path) -> None:
    """Step 4's commands approve the subscription (prosodyctl with this Prosody's config, then
    the restart, which client-proxy rides out), and /healthz says ok once jicofo is online,
    jicofo approving nothing itself. Then the web client's `<conference/>` set to
    focus.meet.test reaches jicofo's session (resource `focus`, and not a second session of the
    account that resource_pattern keeps out), jicofo reads the user's full JID from the
    translated `from`, and the user gets the answer from focus.meet.test with its own id."""
    _, _, toml, approval = recipe_blocks()
    metrics = free_port()
    toml = toml.replace("127.0.0.1:5347", f"127.0.0.1:{jitsi.component_port}")
    toml = toml.replace("127.0.0.1:9347", f"127.0.0.1:{metrics}")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "secret").write_text(SECRET + "\n")
    (credentials / "secret").chmod(0o600)
    config = tmp_path / f"focus.{DOMAIN}.toml"
    config.write_text(toml)
    daemon = Daemon(config, env={"CREDENTIALS_DIRECTORY": str(credentials)})

    async def main() -> None:
        clients: list[Any] = []
        try:
            await daemon.wait_log("connection.up", timeout=15)
            await wait_health(metrics, (503, "subscription pending"))
            for line in approval.splitlines():
                command = shlex.split(line, comments=True)
                if command == ["systemctl", "restart", "prosody"]:
                    mark = daemon.mark()
                    await asyncio.to_thread(jitsi.restart)
                    await daemon.wait_log("connection.up", since=mark, timeout=30)
                elif command:
                    assert command[0] == "prosodyctl", command
                    await asyncio.to_thread(jitsi.prosodyctl, *command[1:])
            await daemon.wait_log("subscription.approved", timeout=15)

            address = ("127.0.0.1", jitsi.c2s_port)
            focus = Jicofo(
                f"focus@auth.{DOMAIN}/focus",
                PASSWORD,
                *address,
                proxy_domain=f"focus.{DOMAIN}",
                approve=False,
            )
            other = TargetResource(
                f"focus@auth.{DOMAIN}/admin-laptop",
                PASSWORD,
                *address,
                proxy_domain=f"focus.{DOMAIN}",
                approve=False,
            )
            user = Requester(f"web@{DOMAIN}/browser", PASSWORD, *address)
            clients += [focus, other, user]
            for client in clients:
                await client.start()
            await daemon.wait_log("resource.online", containing="focus", timeout=15)
            await daemon.wait_log("resource.online", containing="admin-laptop", timeout=15)
            await wait_health(metrics, (200, "ok"))

            ids = []
            for n in range(3):
                room = f"room{n}@conference.{DOMAIN}"
                payload = f"<conference xmlns='{FOCUS_NS}' room='{room}' machine-uid='c0ffee{n}'/>"
                ids.append(user.request(f"focus.{DOMAIN}", type="set", payload=payload))
            replies = await user.all_replies(ids, 8)
            for n, rid in enumerate(ids):
                reply = replies[rid]
                assert reply.type == "result", reply
                assert reply.from_ == f"focus.{DOMAIN}" and reply.to == str(user.boundjid)
                (answer,) = reply.payload
                assert 'ready="true"' in answer and f"room{n}@conference" in answer
            assert focus.users == [str(user.boundjid)] * 3
            assert other.requests == []
            assert focus.approved == other.approved == []
        finally:
            for client in clients:
                if client.transport is not None:
                    client.abort()
            await asyncio.sleep(0.1)

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
        daemon.signal(signal.SIGTERM)
        assert asyncio.run(daemon.wait_exit(10)) == 0
    except BaseException:
        print(daemon.tail(100))
        print(jitsi.log_tail(60))
        raise
    finally:
        daemon.stop()
