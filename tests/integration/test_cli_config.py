"""The `client-proxy` CLI's config contract, run as a real process: `check` exits 0 on a good
config; `check` and `run` exit 2 with one stderr line naming the problem on a bad one (and `run`
does so at once, before connecting anywhere)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from proxy_daemon import cli_command, toml_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GOOD: dict[str, Any] = {
    "component": "proxy.localhost",
    # Port 9 (discard) on loopback: nothing should ever be contacted by these tests.
    "server": "127.0.0.1:9",
    "secret": "s3cret",
    "target": "svc@localhost",
    "request_timeout": 30,
    "retry_get": True,
    "retry_set": False,
    "max_outstanding": 10000,
    "max_per_requester": 1000,
    "sync_grace": 5,
    "drain_timeout": 5,
    "seed": 0,
}


#: The `client-proxy` command in a Python that cannot import uvloop, as on Windows or PyPy.
WITHOUT_UVLOOP = [
    sys.executable,
    "-c",
    "import sys; sys.modules['uvloop'] = None; "
    "from client_proxy.shell.cli import main; sys.exit(main())",
]


def cli(
    *args: str, env: dict[str, str] | None = None, without_uvloop: bool = False
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CLIENT_PROXY_SECRET"}
    return subprocess.run(
        [*(WITHOUT_UVLOOP if without_uvloop else cli_command()), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        env={**environ, **(env or {})},
        check=False,
    )


def write(tmp_path: Path, settings: dict[str, Any] | str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(settings if isinstance(settings, str) else toml_config(settings), "utf-8")
    return path


def with_(**changes: Any) -> dict[str, Any]:
    """GOOD with some keys changed (None removes a key)."""
    settings = {**GOOD, **changes}
    return {k: v for k, v in settings.items() if v is not None}


def test_check_accepts_good_config(tmp_path: Path) -> None:
    """`client-proxy check` exits 0 on a complete, valid config (and on the minimal one: the
    four required keys, everything else defaulted)."""
    for settings in (
        GOOD,
        {k: GOOD[k] for k in ("component", "server", "secret", "target")},
    ):
        result = cli("check", "--config", str(write(tmp_path, settings)))
        assert result.returncode == 0, (result.stdout, result.stderr)


def test_check_accepts_each_event_loop(tmp_path: Path) -> None:
    """`event_loop` may be "uvloop" (the default, when uvloop is installed) or "asyncio";
    `check` names the loop `run` would use."""
    loops = ["asyncio"]
    if importlib.util.find_spec("uvloop") is not None:
        loops.append("uvloop")
    for loop in loops:
        result = cli("check", "--config", str(write(tmp_path, with_(event_loop=loop))))
        assert result.returncode == 0, (loop, result.stderr)
        assert f"(event loop: {loop})" in result.stdout, result.stdout
    default = "uvloop" if "uvloop" in loops else "asyncio"
    result = cli("check", "--config", str(write(tmp_path, GOOD)))
    assert f"(event loop: {default})" in result.stdout, result.stdout


def test_the_default_event_loop_falls_back_to_asyncio_without_uvloop(tmp_path: Path) -> None:
    """Where uvloop is not installed, a config that leaves `event_loop` out still works: `check`
    says the proxy runs on asyncio and why, and `run` logs the same at info and runs."""
    path = str(write(tmp_path, GOOD))
    result = cli("check", "--config", path, without_uvloop=True)
    assert result.returncode == 0, result.stderr
    assert "(event loop: asyncio)" in result.stdout, result.stdout
    assert "uvloop is not installed" in result.stdout, result.stdout

    process = subprocess.Popen(
        [*WITHOUT_UVLOOP, "run", "--config", path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert "INFO event_loop: uvloop is not installed" in first, first
        # It runs: it tries to connect (to port 9, where nothing listens) and stops on SIGTERM.
        second = process.stderr.readline()
        assert "starting:" in second, second
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_uvloop_asked_for_but_missing_is_a_config_error(tmp_path: Path) -> None:
    """`event_loop = "uvloop"` said in so many words, where uvloop is not installed: `check` and
    `run` exit 2 with one line naming the key."""
    path = str(write(tmp_path, with_(event_loop="uvloop")))
    for command in ("check", "run"):
        result = cli(command, "--config", path, without_uvloop=True)
        _assert_one_line_naming(result, ("event_loop",))
        assert "uvloop" in result.stderr


def test_check_accepts_secret_from_file_and_env(tmp_path: Path) -> None:
    """The secret may come from secret_file or $CLIENT_PROXY_SECRET instead of `secret`."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n", "utf-8")
    result = cli("check", "--config", str(write(tmp_path, with_(secret=None, secret_file=secret))))
    assert result.returncode == 0, result.stderr
    result = cli(
        "check",
        "--config",
        str(write(tmp_path, with_(secret=None))),
        env={"CLIENT_PROXY_SECRET": "s3cret"},
    )
    assert result.returncode == 0, result.stderr


BAD_CASES: dict[str, tuple[dict[str, Any] | str, tuple[str, ...]]] = {
    # case: (config, words of which the one stderr line must contain at least one)
    "missing target": (with_(target=None), ("target",)),
    "missing component": (with_(component=None), ("component",)),
    "missing server": (with_(server=None), ("server",)),
    "missing secret": (with_(secret=None), ("secret",)),
    "target not a JID": (with_(target="no-at-sign"), ("target",)),
    "target full JID": (with_(target="svc@localhost/res"), ("target",)),
    "target bad JID": (with_(target="svc@@local host"), ("target",)),
    "component with localpart": (with_(component="proxy@localhost"), ("component",)),
    "target at the component": (with_(target="svc@proxy.localhost"), ("target",)),
    "unreadable secret_file": (
        with_(secret=None, secret_file="/nonexistent/client-proxy/secret"),
        ("secret_file",),
    ),
    "port out of range": (with_(server="127.0.0.1:70000"), ("server", "port")),
    "port zero": (with_(server="127.0.0.1:0"), ("server", "port")),
    "port not a number": (with_(server="127.0.0.1:xmpp"), ("server", "port")),
    "unknown key": (with_(colour="blue"), ("colour",)),
    "negative timeout": (with_(request_timeout=-1), ("request_timeout",)),
    "zero max_outstanding": (with_(max_outstanding=0), ("max_outstanding",)),
    "retry_get not a bool": (with_(retry_get="yes"), ("retry_get",)),
    "unknown event_loop": (with_(event_loop="trio"), ("event_loop",)),
    "not TOML": ("component = = 'proxy.localhost'\n", ("toml",)),
}


def _assert_one_line_naming(
    result: subprocess.CompletedProcess[str], words: tuple[str, ...]
) -> None:
    __tracebackhide__ = True
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert any(w.lower() in lines[0].lower() for w in words), (words, lines[0])


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_check_rejects_bad_config(tmp_path: Path, case: str) -> None:
    """`client-proxy check` on a bad config: exit 2, one stderr line naming the problem."""
    settings, words = BAD_CASES[case]
    result = cli("check", "--config", str(write(tmp_path, settings)))
    _assert_one_line_naming(result, words)


@pytest.mark.parametrize(
    "case",
    [
        "missing target",
        "target bad JID",
        "unreadable secret_file",
        "port out of range",
        "unknown key",
    ],
)
def test_run_rejects_bad_config(tmp_path: Path, case: str) -> None:
    """`client-proxy run` on a bad config exits 2 at once (before connecting), with one stderr
    line naming the problem."""
    settings, words = BAD_CASES[case]
    result = cli("run", "--config", str(write(tmp_path, settings)))
    _assert_one_line_naming(result, words)


def test_missing_config_file(tmp_path: Path) -> None:
    """A config path that does not exist: exit 2, one line naming the file."""
    missing = tmp_path / "nope.toml"
    for command in ("check", "run"):
        result = cli(command, "--config", str(missing))
        _assert_one_line_naming(result, ("nope.toml",))
