"""client_proxy.shell.corelib: which core the daemon runs, and the checks that keep a compiled
core of other source, or a wrong CLIENT_PROXY_CORE, from running."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from types import ModuleType, SimpleNamespace

import client_proxy.core as pure
import pytest
from client_proxy.shell import corelib, daemon
from client_proxy.testing.daemon import cli_command

ROOT = Path(__file__).resolve().parents[2]


def _hook() -> object:
    spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_digest_is_the_one_the_build_hook_records(tmp_path: Path) -> None:
    hook = _hook()
    core = Path(pure.__file__).parent
    assert corelib.source_digest(core) == hook.source_digest(core)  # type: ignore[attr-defined]
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.py").write_text("B = 2\n")
    before = corelib.source_digest(tmp_path)
    assert before == hook.source_digest(tmp_path)  # type: ignore[attr-defined]
    (tmp_path / "b.py").write_text("B = 3\n")
    assert corelib.source_digest(tmp_path) != before


def test_python_is_the_pure_core() -> None:
    core, why = corelib.choose("python")
    assert core is pure
    assert "CLIENT_PROXY_CORE=python" in why


@pytest.mark.parametrize("setting", ["fast", "yes", "c"])
def test_an_unknown_setting_is_refused_naming_the_choices(setting: str) -> None:
    with pytest.raises(corelib.CoreUnavailable, match="expected one of auto, compiled, python"):
        corelib.choose(setting)


def test_a_compiled_core_of_other_source_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled_core: ModuleType
) -> None:
    # client_proxy.core as if edited since the compile: another module beside __init__.py.
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "_edited.py").write_text("X = 1\n")
    monkeypatch.setattr(corelib, "pure", SimpleNamespace(__file__=str(tmp_path / "__init__.py")))
    stale, why = corelib._compiled()
    assert stale is None and "other source" in why, why
    core, why = corelib.choose("auto")
    assert core is corelib.pure and "other source" in why
    wanted = r"CLIENT_PROXY_CORE=compiled: .*other source"
    with pytest.raises(corelib.CoreUnavailable, match=wanted):
        corelib.choose("compiled")


def _cli(
    tmp_path: Path, command: str, core: str, line: str = ""
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`client-proxy COMMAND` on a valid config plus ``line``, with CLIENT_PROXY_CORE=``core``."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        'component = "proxy.localhost"\nserver = "127.0.0.1:9"\nsecret = "s"\n'
        f'target = "svc@localhost"\n{line}\n'
    )
    result = subprocess.run(
        [*cli_command(), command, "--config", str(config)],
        env={**os.environ, "CLIENT_PROXY_CORE": core},
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return config, result


@pytest.mark.parametrize("command", ["check", "run"])
def test_the_cli_refuses_a_wrong_setting_in_one_line(tmp_path: Path, command: str) -> None:
    _, result = _cli(tmp_path, command, "fast")
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "client-proxy: CLIENT_PROXY_CORE='fast': expected one of auto, compiled, python"
    ], result.stderr


def test_check_says_which_core_run_will_use(tmp_path: Path) -> None:
    config, result = _cli(tmp_path, "check", "python")
    assert result.returncode == 0, result
    assert f"{config}: core: client_proxy.core (CLIENT_PROXY_CORE=python)" in result.stdout


def test_the_shell_takes_every_name_from_one_core() -> None:
    # A stray `from client_proxy.core import` in the shell would hand the compiled step the pure
    # core's classes.
    shell = ROOT / "src" / "shell"
    imports = ("from client_proxy.core", "import client_proxy.core")
    for module in shell.glob("*.py"):
        if module.name == "corelib.py":
            continue
        for line in module.read_text().splitlines():
            assert not line.lstrip().startswith(imports), (module.name, line)
    assert daemon.step is corelib.core.step


@pytest.mark.parametrize(
    "line",
    [
        "request_timeout = true",
        "request_timeout = 0",
        "max_outstanding = true",
        "max_outstanding = 1.5",
        "retry_get = 1",
        'routing = "fastest"',
        'allow = ["", "x@y"]',
    ],
)
def test_a_bad_setting_gets_the_same_one_line_whichever_core_runs(
    tmp_path: Path, line: str, compiled_core: ModuleType
) -> None:
    """The compiled core's ProxyConfig would take `true` for seconds, or raise TypeError: the
    shell checks the settings with client_proxy.core's first (corelib.proxy_config)."""
    _, pure_run = _cli(tmp_path, "check", "python", line)
    _, compiled_run = _cli(tmp_path, "check", "compiled", line)
    assert pure_run.returncode == compiled_run.returncode == 2, (pure_run, compiled_run)
    assert len(pure_run.stderr.splitlines()) == 1, pure_run.stderr
    assert compiled_run.stderr == pure_run.stderr
