"""What one integration test works with: the session's server (Prosody or ejabberd), a fresh
target account, requester
accounts, client-proxy daemons run through the real CLI, and the clients it logs in.

Each test is a plain function that runs its async body with ``env.run(main)``: one event loop,
one overall timeout, and every client it made aborted afterwards; daemons are stopped by the
`env` fixture's teardown (which prints their logs and the server's when the test failed).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from client_proxy.testing.ejabberd import Ejabberd
from client_proxy.testing.prosody import Prosody
from proxy_daemon import Daemon, toml_config
from xmpp_clients import Requester, TargetResource

__all__ = [
    "BOUNCE_WITHOUT_PROXY",
    "HOST",
    "PASSWORD",
    "PROMPT",
    "PROXY_DOMAIN",
    "SECRET",
    "SERVER_KINDS",
    "ProxyEnv",
    "XmppServer",
    "wait_for",
]

#: The servers every integration test runs against; their differences: DESIGN.md, "Server facts".
SERVER_KINDS = ("prosody", "ejabberd")
#: Either throwaway server: they have the same interface (ports, register, start, stop, ...).
XmppServer = Prosody | Ejabberd

#: What the server itself answers a stanza for the proxy's domain while no proxy is connected
#: (DESIGN.md, "Server facts"; docs/deploy.md, "The gap"): the error's condition and type, from
#: the address written to. Prosody says the component is not connected (with
#: `<not-connected xmlns='xmpp:prosody.im/protocol/component'/>`); ejabberd, with s2s off as
#: here, tries to route the domain as a remote server and refuses (with s2s on:
#: remote-server-not-found, cancel).
BOUNCE_WITHOUT_PROXY = {
    "prosody": ("remote-server-timeout", "wait"),
    "ejabberd": ("forbidden", "auth"),
}

PROXY_DOMAIN = "proxy.localhost"
HOST = "localhost"
PASSWORD = "password"
#: The component secret of the session's servers.
SECRET = secrets.token_hex(16)

_names = itertools.count(1)

#: No test waits longer than this for one answer that is due "now": well under request_timeout
#: (15 s in these tests), so an answer that only came from the proxy's deadline fails the test.
PROMPT = 8.0


async def wait_for(predicate: Callable[[], object], what: str, timeout: float = PROMPT) -> None:
    """Poll ``predicate`` until it is true, or raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


class ProxyEnv:
    """Everything one test needs; made fresh per test by the `env` fixture."""

    def __init__(self, server: XmppServer, server_kind: str, tmp: Path) -> None:
        self.server = server
        #: "prosody" or "ejabberd", for the assertions that differ between them.
        self.server_kind = server_kind
        self.tmp = tmp
        self.daemons: list[Daemon] = []
        self.clients: list[Any] = []
        self.target = self.account("svc")

    # -- accounts and config -----------------------------------------------------------------

    def account(self, prefix: str) -> str:
        """Register a new account `<prefix>-<n>@localhost` and return its bare JID."""
        return self.server.register(f"{prefix}-{next(_names)}-{os.getpid()}", HOST, PASSWORD)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The daemon's config for this test; a key set to None is left out."""
        base: dict[str, Any] = {
            "component": PROXY_DOMAIN,
            "server": f"127.0.0.1:{self.server.component_port}",
            "secret": SECRET,
            "target": self.target,
            "request_timeout": 15,
            "sync_grace": 3,
            "drain_timeout": 2,
            "seed": 0,
        }
        base.update(overrides)
        return base

    def write_config(self, settings: dict[str, Any] | str, name: str = "proxy.toml") -> Path:
        path = self.tmp / name
        text = settings if isinstance(settings, str) else toml_config(settings)
        path.write_text(text, encoding="utf-8")
        return path

    # -- processes and clients ---------------------------------------------------------------

    def start_daemon(self, env: dict[str, str] | None = None, **overrides: Any) -> Daemon:
        """Start `client-proxy run` with this test's config (plus overrides)."""
        name = f"proxy-{len(self.daemons) + 1}.toml"
        daemon = Daemon(self.write_config(self.settings(**overrides), name), env=env)
        self.daemons.append(daemon)
        return daemon

    def restart_daemon(self, dead: Daemon, env: dict[str, str] | None = None) -> Daemon:
        """A new `client-proxy run` with the very config file of `dead`, which has exited: what
        systemd's Restart= does after a crash."""
        assert dead.process.poll() is not None, "restart_daemon: the old process still runs"
        daemon = Daemon(dead.config_path, env=env)
        self.daemons.append(daemon)
        return daemon

    async def ready_daemon(self, **overrides: Any) -> Daemon:
        """A daemon that has connected to the server (`connection.up`)."""
        daemon = self.start_daemon(**overrides)
        await daemon.wait_log("connection.up", timeout=15)
        return daemon

    async def requester(self, jid: str | None = None, resource: str = "abc") -> Requester:
        """A logged-in requester (a fresh account unless `jid` is given)."""
        bare = jid or self.account("user")
        client = Requester(f"{bare}/{resource}", PASSWORD, "127.0.0.1", self.server.c2s_port)
        self.clients.append(client)
        await client.start()
        return client

    async def resource(
        self,
        name: str,
        *,
        jid: str | None = None,
        mode: str = "echo",
        delay: float = 0.0,
        priority: int | None = None,
        approve: bool = True,
    ) -> TargetResource:
        """A logged-in resource of the target account (approves the proxy's subscription unless
        `approve` is false)."""
        client = TargetResource(
            f"{jid or self.target}/{name}",
            PASSWORD,
            "127.0.0.1",
            self.server.c2s_port,
            proxy_domain=PROXY_DOMAIN,
            mode=mode,  # type: ignore[arg-type]
            delay=delay,
            priority=priority,
            approve=approve,
        )
        self.clients.append(client)
        await client.start()
        return client

    async def online(
        self,
        daemon: Daemon,
        *names: str,
        mode: str = "echo",
        since: int | None = None,
        priority: int | None = None,
    ) -> list[TargetResource]:
        """Log in the target resources `names` and wait until the daemon reports each online."""
        mark = daemon.mark() if since is None else since
        clients = [await self.resource(n, mode=mode, priority=priority) for n in names]
        for n in names:
            await self.wait_resource(daemon, "resource.online", n, since=mark)
        return clients

    @staticmethod
    async def wait_resource(
        daemon: Daemon, code: str, name: str, *, since: int = 0, timeout: float = 15.0
    ) -> None:
        """Wait for a log line with `code` (resource.online/offline) that names resource `name`."""
        await daemon.wait_log(code, containing=name, since=since, timeout=timeout)

    def run(self, main: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
        """Run the test's async body in a fresh loop, with an overall timeout; then abort every
        client it started."""

        async def body() -> None:
            try:
                await asyncio.wait_for(main(), timeout)
            finally:
                for client in self.clients:
                    if client.transport is not None:
                        client.abort()
                await asyncio.sleep(0.1)

        asyncio.run(body())

    def teardown(self, failed: bool) -> None:
        for daemon in self.daemons:
            daemon.stop()
        if failed or os.environ.get("CLIENT_PROXY_TEST_LOGS"):
            for daemon in self.daemons:
                print(
                    f"\n=== {daemon.config_path.name} (pid {daemon.pid}) "
                    f"exit {daemon.process.returncode} ==="
                )
                print(daemon.tail(200))
            print(self.server.log_tail(80))
        if not self.server.running:
            # A test that stopped the server and failed before restarting it: bring it back.
            self.server.start()
