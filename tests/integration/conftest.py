"""Fixtures for the integration tests: one real server per session and kind (`server`: Prosody
and ejabberd, so every test that takes `env` runs against both), and per test a fresh
:class:`proxy_env.ProxyEnv` (`env`): a new target account, new requesters, new daemons.

A test whose behaviour really differs between the servers either asserts each server's own
behaviour (``env.server_kind``) or is marked ``@pytest.mark.only_on("prosody", reason=...)``,
naming the server fact that makes it so (DESIGN.md, "Server facts measured here").
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from client_proxy.testing.ejabberd import Ejabberd, ejabberd_available
from client_proxy.testing.prosody import Prosody, prosody_available
from proxy_env import PROXY_DOMAIN, SECRET, SERVER_KINDS, ProxyEnv, XmppServer
from roster_command import roster_command_plugins


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Generator[XmppServer, None, None]:
    """The session's server of one kind: virtual host localhost, component proxy.localhost,
    fresh data. pytest runs every test on the first kind, then every test on the second, so each
    server starts once."""
    kind: str = request.param
    server: XmppServer
    if kind == "prosody":
        if not prosody_available():
            _unavailable("prosody/prosodyctl not installed (scripts/bootstrap installs it)")
        server = Prosody(
            tmp_path_factory.mktemp("prosody"),
            components={PROXY_DOMAIN: SECRET},
            plugin_paths=roster_command_plugins(),
        )
    else:
        if not ejabberd_available():
            _unavailable("ejabberdctl/erl not installed (scripts/bootstrap installs ejabberd)")
        server = Ejabberd(tmp_path_factory.mktemp("ejabberd"), components={PROXY_DOMAIN: SECRET})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(
    server: XmppServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Generator[ProxyEnv, None, None]:
    kind = "prosody" if isinstance(server, Prosody) else "ejabberd"
    only = request.node.get_closest_marker("only_on")
    if only is not None and only.args[0] != kind:
        pytest.skip(f"{only.args[0]} only: {only.kwargs['reason']}")
    if not server.running:
        server.start()
    proxy_env = ProxyEnv(server, kind, tmp_path)
    try:
        yield proxy_env
    finally:
        report = getattr(request.node, "rep_call", None)
        proxy_env.teardown(failed=report is None or report.failed)
