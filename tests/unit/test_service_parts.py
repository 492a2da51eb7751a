"""The parts of running as a service that need no server: the systemd units (checked with
`systemd-analyze verify` where it is installed), the sd_notify socket, the log formats and
journald's priority prefix, the config keys of the service (metrics_listen, log_format, a
secret under $CREDENTIALS_DIRECTORY and the warnings of `check`), `--version`."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from client_proxy.shell.config import ConfigError, parse_settings
from client_proxy.shell.logs import JsonFormatter, TextFormatter, under_journald
from client_proxy.shell.notify import Notifier
from client_proxy.testing.daemon import cli_command

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "contrib" / "systemd"
BASE: dict[str, Any] = {
    "component": "proxy.localhost",
    "server": "127.0.0.1:9",
    "secret": "s",
    "target": "svc@localhost",
}


# -- systemd units -----------------------------------------------------------------------------


def _directives(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("name", ["client-proxy.service", "client-proxy@.service"])
def test_the_units_say_what_an_operator_relies_on(name: str) -> None:
    units = _directives(UNITS / name)
    assert units["Type"] == ["notify"]
    assert units["ExecStartPre"][0].split()[1] == "check"
    assert units["ExecStart"][0].split()[1] == "run"
    assert units["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert units["Restart"] == ["on-failure"]
    assert units["RestartPreventExitStatus"] == ["78"]
    assert units["WatchdogSec"]
    for key in ("DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert units[key] == ["yes"], key
    assert units["ProtectSystem"] == ["strict"]
    assert units["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert units["LoadCredential"][0].startswith("secret:")
    if "@" in name:
        assert "%i" in units["Environment"][0] and "%i" in units["LoadCredential"][0]


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on both units (the template as an instance), with ExecStart
    pointing at this checkout's `client-proxy` (verify checks that the command exists)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(
            "systemd-analyze is not installed (Debian's systemd package has it; the bootstrap "
            "does not install systemd, which is heavy and not needed to run the proxy)"
        )
    command = cli_command()[0]
    for name, as_name in (
        ("client-proxy.service", "client-proxy.service"),
        ("client-proxy@.service", "client-proxy@focus.meet.test.service"),
    ):
        text = (UNITS / name).read_text(encoding="utf-8")
        (tmp_path / as_name).write_text(text.replace("/usr/local/bin/client-proxy", command))
    result = subprocess.run(
        [analyze, "verify", "client-proxy.service", "client-proxy@focus.meet.test.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


# -- sd_notify ---------------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_writes_datagrams_to_the_socket(tmp_path: Path, abstract: bool) -> None:
    """A path or an abstract socket ('@name'); STATUS only when it changes; READY carries the
    status; the watchdog interval is half of WATCHDOG_USEC, and only for this process."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"@client-proxy-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    server.bind("\0" + name[1:] if abstract else name)
    server.settimeout(2)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "3000000"})
        assert notifier.watchdog_interval == 1.5
        notifier.status("link down")
        notifier.status("link down")
        notifier.ready()
        notifier.stopping()
        got = [server.recv(4096).decode() for _ in range(3)]
        assert got == ["STATUS=link down", "READY=1\nSTATUS=link down", "STOPPING=1"]
        notifier.close()
        other = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "3", "WATCHDOG_PID": "1"})
        assert other.watchdog_interval is None
        other.close()
    finally:
        server.close()
    assert not Notifier({}).enabled


# -- logs --------------------------------------------------------------------------------------


def _record(level: int, message: str, name: str = "client_proxy", **extra: Any) -> Any:
    record = logging.LogRecord(name, level, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_text_lines_carry_the_journald_priority() -> None:
    formatter = TextFormatter(journald=True)
    assert formatter.format(_record(logging.ERROR, "connection.failed: x")) == (
        "<3>ERROR connection.failed: x"
    )
    assert formatter.format(_record(logging.INFO, "a: b")).startswith("<6>INFO ")
    assert formatter.format(_record(logging.WARNING, "a: b")).startswith("<4>")
    assert formatter.format(_record(logging.DEBUG, "a: b")).startswith("<7>")
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record(logging.ERROR, "crashed: x", exc_info=sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    # Not under journald: the line as it always was, time first.
    plain = TextFormatter().format(_record(logging.INFO, "connection.up: x"))
    assert plain.split(" ", 2)[2] == "INFO connection.up: x"


def test_journald_is_recognised_by_the_stream_it_names(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("w") as stream:
        info = os.fstat(stream.fileno())
        assert under_journald(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        assert not under_journald(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
        assert not under_journald(stream, {})


def test_json_lines_carry_code_message_and_fields() -> None:
    formatter = JsonFormatter()
    line = json.loads(
        formatter.format(
            _record(logging.INFO, "config.reloaded: x: changed a", fields={"changed": ["a"]})
        )
    )
    assert line["level"] == "info" and line["code"] == "config.reloaded"
    assert line["message"] == "x: changed a" and line["changed"] == ["a"]
    assert line["time"].endswith("Z")
    other = json.loads(formatter.format(_record(logging.WARNING, "odd", name="slixmpp.xmlstream")))
    assert other["code"] == "slixmpp.xmlstream" and other["message"] == "odd"
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record(logging.ERROR, "crashed: x", exc_info=sys.exc_info())
    assert "ValueError: boom" in json.loads(formatter.format(record))["exception"]


# -- config ------------------------------------------------------------------------------------


def test_metrics_listen_and_log_format() -> None:
    settings = parse_settings({**BASE, "metrics_listen": "127.0.0.1:9347", "log_format": "json"})
    assert settings.metrics_listen == ("127.0.0.1", 9347)
    assert settings.log_format == "json" and settings.warnings == ()
    assert parse_settings(BASE).metrics_listen is None
    assert parse_settings({**BASE, "metrics_listen": "[::1]:9347"}).warnings == ()
    (warning,) = parse_settings({**BASE, "metrics_listen": "0.0.0.0:9347"}).warnings
    assert "not a loopback address" in warning
    with pytest.raises(ConfigError, match="log_format"):
        parse_settings({**BASE, "log_format": "xml"})
    with pytest.raises(ConfigError, match="metrics_listen"):
        parse_settings({**BASE, "metrics_listen": "9347"})


def test_secret_file_under_the_credentials_directory(tmp_path: Path) -> None:
    raw = {k: v for k, v in BASE.items() if k != "secret"}
    (tmp_path / "secret").write_text("from-systemd\n")
    (tmp_path / "secret").chmod(0o600)
    for spelling in ("$CREDENTIALS_DIRECTORY/secret", "${CREDENTIALS_DIRECTORY}/secret"):
        settings = parse_settings(
            {**raw, "secret_file": spelling}, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}
        )
        assert settings.secret == "from-systemd" and settings.warnings == ()
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY, which is not set"):
        parse_settings({**raw, "secret_file": "$CREDENTIALS_DIRECTORY/secret"}, environ={})


def test_check_warns_about_a_secret_file_others_can_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    config = tmp_path / "proxy.toml"
    config.write_text(
        'component = "proxy.localhost"\nserver = "127.0.0.1:9"\ntarget = "svc@localhost"\n'
        f'secret_file = "{secret}"\n'
    )
    result = subprocess.run(
        [*cli_command(), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "warning: secret_file" in result.stdout and "readable by every user" in result.stdout
    secret.chmod(0o600)
    result = subprocess.run(
        [*cli_command(), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "warning" not in result.stdout, result.stdout


def test_version() -> None:
    result = subprocess.run(
        [*cli_command(), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    from importlib.metadata import version  # noqa: PLC0415

    assert result.stdout.strip() == f"client-proxy {version('client-proxy')}"


# -- metrics -----------------------------------------------------------------------------------


def test_the_duration_histogram_counts_each_request_in_its_bucket() -> None:
    """Prometheus' `le`: a duration equal to a bound is in that bound's bucket; past the last
    bound only +Inf counts it; refused requests (no duration) and outbound ones are left out."""
    from client_proxy.core import ProxyConfig, RequestEnded, initial_state  # noqa: PLC0415
    from client_proxy.shell.metrics import Metrics  # noqa: PLC0415
    from prometheus_client.exposition import generate_latest  # noqa: PLC0415

    state = initial_state(ProxyConfig(proxy_domain="proxy.localhost", target="svc@localhost"), 1)
    metrics = Metrics(lambda: state)
    for duration in (0.001, 0.0011, 61.0):
        metrics.request_ended(RequestEnded("inbound", "result", duration))
    metrics.request_ended(RequestEnded("inbound", "forbidden", None))
    metrics.request_ended(RequestEnded("outbound", "result", 0.5))
    text = generate_latest(metrics.registry).decode()
    name = "client_proxy_request_duration_seconds"
    assert f'{name}_bucket{{le="0.001"}} 1.0' in text
    assert f'{name}_bucket{{le="0.0025"}} 2.0' in text
    assert f'{name}_bucket{{le="60.0"}} 2.0' in text
    assert f'{name}_bucket{{le="+Inf"}} 3.0' in text
    assert f"{name}_count 3.0" in text
    assert 'client_proxy_requests_total{direction="inbound",outcome="forbidden"} 1.0' in text
    assert 'client_proxy_requests_total{direction="outbound",outcome="result"} 1.0' in text


# -- reloading -----------------------------------------------------------------------------------


def test_the_reload_docs_name_every_key_once() -> None:
    """docs/deploy.md's Reloading section puts every config key in exactly one of its lists, and
    its "only at a restart" list is what the reload really leaves for a restart: the keys it
    notes as pending, and the target, which it refuses."""
    from client_proxy.shell.config import _KNOWN  # noqa: PLC0415
    from client_proxy.shell.reload import RESTART_KEYS  # noqa: PLC0415

    page = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = page[page.index("### Reloading") :]
    section = section[: section.index("\n## ")]
    bullets = section.split("\n- ")[1:]
    named = [
        {word for word in re.findall(r"`([a-z_]+)`", bullet) if word in _KNOWN}
        for bullet in bullets
    ]
    everywhere = [key for keys in named for key in keys]
    assert sorted(everywhere) == sorted(_KNOWN), "each key in exactly one list"
    (restart,) = [keys for bullet, keys in zip(bullets, named, strict=True) if "restart" in bullet]
    assert restart == {*RESTART_KEYS, "target"}
