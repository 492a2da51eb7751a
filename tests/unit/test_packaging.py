"""The installed layout: src/core, src/shell, src/sim and src/testing ship as client_proxy.*, and
never as top-level `core` or `shell` (DESIGN.md: import names).

An editable install gets there through hatch_build.py, which links build/editable/client_proxy/core
to src/core and so on at install time. Everything here builds with the hatchling installed in the
environment (the dev extra), so it needs no network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "shell", "sim", "testing")


def _wheel_names(project: Path, out: Path) -> list[str]:
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-q", "-w", str(out), str(project)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    (wheel,) = out.glob("client_proxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _assert_client_proxy_only(names: list[str]) -> None:
    packages = {n.split("/")[0] for n in names if not n.startswith("client_proxy-")}
    assert packages == {"client_proxy"}, packages
    for module in ("core/__init__.py", "core/py.typed", "shell/cli.py", "sim/__init__.py"):
        assert f"client_proxy/{module}" in names
    assert "client_proxy/testing/strategies.py" in names


def test_the_wheel_holds_client_proxy_packages_only(tmp_path: Path) -> None:
    names = _wheel_names(ROOT, tmp_path)
    _assert_client_proxy_only(names)
    # With a C compiler (CI has one), the compiled core, and the digest of the source it was
    # compiled from, which client_proxy.shell.corelib checks against client_proxy.core's.
    if shutil.which("cc") is None and not os.environ.get("CI"):
        pytest.skip("no C compiler: the wheel is pure")
    (wheel,) = tmp_path.glob("client_proxy-*.whl")
    assert not wheel.name.endswith("-py3-none-any.whl"), wheel.name
    compiled = [n for n in names if n.startswith("client_proxy/compiled_core")]
    assert "client_proxy/compiled_core/SOURCE-SHA256" in compiled, compiled
    for module in ("__init__", "_machine", "_requests", "_seal"):
        assert any(n.startswith(f"client_proxy/compiled_core/{module}.") for n in compiled)
    assert any(n.startswith("client_proxy/compiled_core__mypyc.") for n in compiled), compiled
    with zipfile.ZipFile(wheel) as archive:
        stamp = archive.read("client_proxy/compiled_core/SOURCE-SHA256").decode().strip()
    spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    assert stamp == hook.source_digest(ROOT / "src" / "core")


def test_a_wheel_built_from_the_sdist_holds_them_too(tmp_path: Path) -> None:
    # As pip installs from an sdist: the sdist must carry src/, even next to an editable install's
    # links in build/editable.
    code = f"import hatchling.build as b; print(b.build_sdist({str(tmp_path)!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=ROOT,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    sdist = tmp_path / out.strip().splitlines()[-1]
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    shutil.unpack_archive(sdist, tmp_path / "unpacked", **safe)
    (project,) = (tmp_path / "unpacked").iterdir()
    assert not (project / "build").exists()
    _assert_client_proxy_only(_wheel_names(project, tmp_path / "wheel"))


def test_the_editable_install_imports_under_client_proxy_only() -> None:
    code = (
        "import importlib.util, client_proxy.core, client_proxy.shell.cli;"
        "assert importlib.util.find_spec('core') is None;"
        "assert importlib.util.find_spec('shell') is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/", timeout=60)


def test_the_editable_install_reads_the_src_folders() -> None:
    # A package's __path__ is where Python looks for its modules: the src folder itself, so an
    # edited or a new module is picked up without reinstalling.
    code = (
        "import importlib, os\n"
        f"for name in {PACKAGES!r}:\n"
        "    package = importlib.import_module('client_proxy.' + name)\n"
        "    print(name, *(os.path.realpath(p) for p in package.__path__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd="/",
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    found = dict(line.split(" ", 1) for line in out.splitlines())
    assert found == {name: str(ROOT / "src" / name) for name in PACKAGES}


def _editable_build(project: Path) -> Path:
    """Builds an editable wheel of `project` as pip would (the PEP 660 hook); returns the folder
    that its .pth file puts on sys.path."""
    code = "import hatchling.build as b; print(b.build_editable('dist'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=project,
        timeout=60,
        capture_output=True,
        text=True,
        # The links only: the wheel tests compile the core.
        env={**os.environ, "CLIENT_PROXY_COMPILE": "0"},
    ).stdout
    wheel = project / "dist" / out.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (pth,) = (n for n in names if n.endswith(".pth"))
        # Nothing is copied in: the .pth file points at the links.
        assert not any(n.startswith(("client_proxy/", "core/", "shell/")) for n in names)
        folders = {Path(f) for f in archive.read(pth).decode().split()}
    # The links, and the compiled core's folder (hatch_build.py), which holds nothing of theirs.
    folder = project / "build" / "editable"
    assert folders == {folder, project / "build" / "compiled"}, folders
    return folder


def test_an_editable_build_links_client_proxy_to_src_at_install_time(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "hatch_build.py", "README.md"):
        shutil.copy(ROOT / name, project)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    # What an earlier install may have left: a link for a mapping that has gone since.
    stale = project / "build" / "editable" / "client_proxy" / "gone"
    stale.parent.mkdir(parents=True)
    stale.symlink_to(project / "src" / "core", target_is_directory=True)

    _editable_build(project)
    folder = _editable_build(project)  # again, as a reinstall does: it must not trip on its links

    assert folder == project / "build" / "editable"
    assert sorted(p.name for p in folder.iterdir()) == ["client_proxy"]
    links = {p.name: p for p in (folder / "client_proxy").iterdir()}
    assert sorted(links) == sorted(PACKAGES)
    for name, link in links.items():
        assert link.is_symlink()
        assert link.resolve() == project / "src" / name

    # A module added after the install imports at once, under client_proxy only.
    (project / "src" / "core" / "_added_later.py").write_text("ANSWER = 42\n")
    code = (
        "import sys, importlib.util; sys.path.insert(0, sys.argv[1]);"
        "from client_proxy.core._added_later import ANSWER; assert ANSWER == 42;"
        "assert importlib.util.find_spec('core') is None"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, cwd="/", timeout=60)


def test_git_holds_no_symlinks() -> None:
    # The links are made at install time; none is committed.
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--stage"],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    assert [line for line in listed.splitlines() if line.startswith("120000 ")] == []
