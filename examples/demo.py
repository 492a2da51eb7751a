"""`./just demo`: client-proxy working for real, on a throwaway Prosody on loopback.

It starts Prosody (Debian's package) with a generated config in a temporary directory, the proxy
(`client-proxy run`, a real process), the example implementing client with two resources, and a
user. Then it sends a few requests and prints each hop as the two ends see it:

    1 user   -> proxy    what the user sends (its `from` is stamped by the server)
    2 proxy  -> target   what the implementing client receives: the translated request
    3 target -> proxy    what the implementing client answers
    4 proxy  -> user     what the user receives: the reply, restored

Everything it started is stopped before it exits, and its temporary directory is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from client_proxy.testing.daemon import cli_command, toml_config
from client_proxy.testing.prosody import Prosody, ProsodyError, prosody_available
from implementing_client import ECHO_NS, PING_NS, VERSION_NS, ProxiedService
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout

PROXY = "proxy.localhost"
SECRET = "demo-secret"
PASSWORD = "demo-password"
USER = "user@localhost/demo"

BOLD = "\033[1m" if sys.stdout.isatty() else ""
DIM = "\033[2m" if sys.stdout.isatty() else ""
RESET = "\033[0m" if sys.stdout.isatty() else ""


def say(text: str = "") -> None:
    print(text, flush=True)


def describe(xml: ET.Element, stamped_from: str | None = None) -> str:
    """One line for an IQ: its routing attributes and its payload's element."""
    attrs = {name: xml.get(name) for name in ("type", "id", "to", "from")}
    if attrs["from"] is None:
        attrs["from"] = stamped_from  # a client's stanza gets its `from` from the server
    text = " ".join(f"{name}='{value}'" for name, value in attrs.items() if value is not None)
    inside = ""
    for child in xml:
        namespace, _, name = child.tag[1:].partition("}")
        if name == "error":
            conditions = " ".join(
                f"<{c.tag.rpartition('}')[2]}/>" if not c.tag.endswith("}text") else repr(c.text)
                for c in child
            )
            inside = f" <error type='{child.get('type')}'> {conditions}"
        else:
            inside = f" <{name} xmlns='{namespace}'/>"
        break
    return f"<iq {text}>{inside}"


class Hops:
    """Records the four hops of each request id, as the two ends see them."""

    def __init__(self) -> None:
        self.lines: dict[str, list[tuple[int, str]]] = {}

    def add(self, hop: int, xml: ET.Element, stamped_from: str | None = None) -> None:
        iq_id = xml.get("id") or "?"
        self.lines.setdefault(iq_id, []).append((hop, describe(xml, stamped_from)))

    def show(self, iq_id: str) -> None:
        arrows = {
            1: "user   -> proxy ",
            2: "proxy  -> target",
            3: "target -> proxy ",
            4: "proxy  -> user  ",
        }
        for hop, text in sorted(self.lines.get(iq_id, [])):
            say(f"    {hop} {arrows[hop]}: {text}")


def tap(client: ClientXMPP, hops: Hops, incoming: int, outgoing: int, me: str) -> None:
    """Record the IQs a client receives (hop `incoming`) and sends (hop `outgoing`)."""

    def seen_in(stanza: Any) -> Any:
        if stanza.xml.tag.endswith("}iq") and stanza["type"] in ("get", "set", "result", "error"):
            hops.add(incoming, stanza.xml)
        return stanza

    def seen_out(stanza: Any) -> Any:
        if hasattr(stanza, "xml") and stanza.xml.tag.endswith("}iq"):
            hops.add(outgoing, stanza.xml, stamped_from=me)
        return stanza

    client.add_filter("in", seen_in)
    client.add_filter("out", seen_out)


class ProxyProcess:
    """`client-proxy run` as a child process; its log lines are shown dimmed as they come."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [*cli_command(), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.seen = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for raw in iter(self.process.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            with self.seen:
                self.lines.append(line)
                self.seen.notify_all()
            say(f"{DIM}    [client-proxy] {line.split(' ', 2)[-1]}{RESET}")

    async def wait_for(self, text: str, count: int = 1, timeout: float = 15.0) -> None:
        def enough() -> bool:
            return sum(text in line for line in self.lines) >= count

        def wait() -> bool:
            with self.seen:
                return self.seen.wait_for(enough, timeout)

        if not await asyncio.to_thread(wait):
            raise RuntimeError(f"client-proxy did not log {text!r} within {timeout} s")

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def plaintext(client: ClientXMPP) -> None:
    client.enable_direct_tls = False
    client.enable_starttls = False
    client.enable_plaintext = True
    client.plugin["feature_mechanisms"].unencrypted_scram = True


async def request(
    user: ClientXMPP, hops: Hops, to: str, namespace: str, iq_id: str, *, text: str | None = None
) -> None:
    iq = (
        user.make_iq_get(queryxmlns=namespace, ito=to)
        if namespace != PING_NS
        else user.make_iq_get(ito=to)
    )
    if namespace == PING_NS:
        iq.xml.append(ET.Element(f"{{{PING_NS}}}ping"))
    elif text is not None:
        ET.SubElement(iq.xml.find(f"{{{namespace}}}query"), f"{{{namespace}}}text").text = text
    iq["id"] = iq_id
    try:
        await iq.send(timeout=10)
    except IqError:
        pass  # the tap has recorded it: showing errors is the point
    except IqTimeout:
        say(f"    (no answer to {iq_id} within 10 s)")
    await asyncio.sleep(0.05)  # let the implementing client's outgoing filter run
    hops.show(iq_id)


async def scenario(server: Prosody, proxy: ProxyProcess) -> None:
    hops = Hops()
    services = []
    for resource in ("w1", "w2"):
        service = ProxiedService(f"svc@localhost/{resource}", PASSWORD, PROXY)
        plaintext(service)
        tap(service, hops, incoming=2, outgoing=3, me=f"svc@localhost/{resource}")
        service.address = ("127.0.0.1", server.c2s_port)
        service.connect(*service.address)
        services.append(service)
    await proxy.wait_for("resource.online", count=2)

    user = ClientXMPP(USER, PASSWORD)
    plaintext(user)
    tap(user, hops, incoming=4, outgoing=1, me=USER)
    user.connect("127.0.0.1", server.c2s_port)
    await user.wait_until("session_start", 10)

    say(f"\n{BOLD}1. A ping to {PROXY}: the README flow{RESET}")
    await request(user, hops, PROXY, PING_NS, "demo-1")

    say(f"\n{BOLD}2. To {PROXY}/x: the answer comes back from {PROXY}/x{RESET}")
    await request(user, hops, f"{PROXY}/x", VERSION_NS, "demo-2")

    say(f"\n{BOLD}3. Four echo requests, spread over both resources{RESET}")
    for n in range(3, 7):
        await request(user, hops, PROXY, ECHO_NS, f"demo-{n}", text=f"hello {n}")

    say(f"\n{BOLD}4. w1 goes offline: w2 takes every request{RESET}")
    await services[0].stop()
    await proxy.wait_for("resource.offline")
    await request(user, hops, PROXY, ECHO_NS, "demo-7", text="still here?")

    say(f"\n{BOLD}5. No resource online: the user gets an error at once, never silence{RESET}")
    await services[1].stop()
    await proxy.wait_for("resource.offline", count=2)
    await request(user, hops, PROXY, PING_NS, "demo-8")

    await user.disconnect()


async def main_async() -> int:
    with tempfile.TemporaryDirectory(prefix="client-proxy-demo-") as tmp:
        workdir = Path(tmp)
        server = Prosody(workdir / "prosody", components={PROXY: SECRET}, log_level="info")
        for name in ("svc", "user"):
            server.register(name, "localhost", PASSWORD)
        config = workdir / "client-proxy.toml"
        settings = {
            "component": PROXY,
            "server": f"127.0.0.1:{server.component_port}",
            "secret": SECRET,
            "target": "svc@localhost",
            "request_timeout": 5,
            "drain_timeout": 2,
            "seed": 1,
        }
        config.write_text(toml_config(settings), encoding="utf-8")
        say(f"{BOLD}client-proxy demo{RESET}")
        say(
            f"  Prosody on 127.0.0.1: clients :{server.c2s_port}, "
            f"components :{server.component_port} (data in a temporary directory)"
        )
        say(
            "  accounts: svc@localhost (the implementing client, resources w1 and w2), "
            "user@localhost (a user)"
        )
        say(f"  client-proxy: {PROXY} -> svc@localhost\n")
        server.start()
        proxy: ProxyProcess | None = None
        try:
            proxy = ProxyProcess(config)
            await proxy.wait_for("connection.up")
            await scenario(server, proxy)
            say(f"\n{BOLD}6. SIGTERM: client-proxy drains and exits{RESET}")
            code = proxy.stop()
            say(f"  client-proxy exited with {code}")
            return 0 if code == 0 else 1
        finally:
            if proxy is not None:
                proxy.stop()
            server.stop()


def main() -> int:
    logging.basicConfig(level=logging.CRITICAL)  # the demo prints its own story
    if not prosody_available():
        say("demo: prosody is not installed; run it through ./just demo, which installs it")
        return 1
    try:
        return asyncio.run(main_async())
    except ProsodyError as exc:
        say(f"demo: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
