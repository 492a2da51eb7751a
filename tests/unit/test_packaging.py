"""The installed layout: src/core, src/shell, src/sim and src/testing ship as client_proxy.*, and
never as top-level `core` or `shell` (DESIGN.md: import names)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_client_proxy_packages_only(tmp_path: Path) -> None:
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("client_proxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[0] for n in names if not n.startswith("client_proxy-")}
    assert packages == {"client_proxy"}, packages
    for module in ("core/__init__.py", "core/py.typed", "shell/cli.py", "sim/__init__.py"):
        assert f"client_proxy/{module}" in names
    assert "client_proxy/testing/strategies.py" in names


def test_the_editable_install_imports_under_client_proxy_only() -> None:
    code = (
        "import importlib.util, client_proxy.core, client_proxy.shell.cli;"
        "assert importlib.util.find_spec('core') is None;"
        "assert importlib.util.find_spec('shell') is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/", timeout=60)
