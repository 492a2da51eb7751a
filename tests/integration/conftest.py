"""Fixtures for the integration tests: one real Prosody per session (`prosody`), and per test a
fresh :class:`proxy_env.ProxyEnv` (`env`): a new target account, new requesters, new daemons."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from client_proxy.testing.prosody import Prosody, prosody_available
from proxy_env import PROXY_DOMAIN, SECRET, ProxyEnv


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Generator[Prosody, None, None]:
    """The session's Prosody: VirtualHost localhost, Component proxy.localhost, fresh data."""
    if not prosody_available():
        message = "prosody/prosodyctl not installed (scripts/bootstrap installs Debian's prosody)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = Prosody(tmp_path_factory.mktemp("prosody"), components={PROXY_DOMAIN: SECRET})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(
    prosody: Prosody, tmp_path: Path, request: pytest.FixtureRequest
) -> Generator[ProxyEnv, None, None]:
    if not prosody.running:
        prosody.start()
    proxy_env = ProxyEnv(prosody, tmp_path)
    try:
        yield proxy_env
    finally:
        report = getattr(request.node, "rep_call", None)
        proxy_env.teardown(failed=report is None or report.failed)
