"""Running client-proxy itself from tests, demos and benchmarks: the command, and a config file.

Standard library only::

    from client_proxy.testing.daemon import cli_command, toml_config

    path.write_text(toml_config({"component": "proxy.localhost", ...}))
    subprocess.Popen([*cli_command(), "run", "--config", str(path)])
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = ["cli_command", "toml_config", "toml_value"]


def cli_command() -> list[str]:
    """How to run the `client-proxy` command: the script beside this Python, else on PATH, else
    the module."""
    beside = Path(sys.executable).with_name("client-proxy")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("client-proxy")
    if found:
        return [found]
    return [sys.executable, "-m", "client_proxy.shell.cli"]


def toml_value(value: object) -> str:
    """A TOML literal for a bool, number, string, or list of those."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def toml_config(settings: dict[str, object]) -> str:
    """A flat TOML document; a value of None leaves the key out."""
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items() if v is not None)
