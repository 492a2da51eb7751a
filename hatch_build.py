"""Hatchling build hook: lays out the editable install's `client_proxy` folder at install time.

The repository keeps src/core, src/shell, src/sim and src/testing; they install as
client_proxy.core, client_proxy.shell, client_proxy.sim and client_proxy.testing. The wheel renames
them through `[tool.hatch.build.targets.wheel.sources]`, but an editable install cannot: hatchling's
own editable mode (the `editables` import hook) maps top-level names only, and an import hook of any
kind is invisible to mypy. So for an editable build only, this hook makes, inside the folder that
`dev-mode-dirs` names (build/editable, ignored by git), one symlink per `sources` entry:
client_proxy/core -> src/core and so on. The editable wheel's .pth file puts that folder on
sys.path. The links point at folders, so edited and new modules take effect without reinstalling.

It also builds the compiled core: a copy of src/core compiled by mypyc as
client_proxy.compiled_core, which the daemon runs instead of client_proxy.core when it was built
from the same source (client_proxy.shell.corelib checks). For a wheel, into the wheel (a platform
wheel then; without a C compiler and Python's headers the wheel is pure, and the daemon runs
client_proxy.core). For an editable install, into build/compiled, the second of dev-mode-dirs;
scripts/bootstrap runs `python hatch_build.py compile` on every `just` recipe, which rebuilds it
when src/core has changed since (about 15 s; a no-op otherwise). CLIENT_PROXY_COMPILE=0 skips it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _load_stamp() -> Any:
    # src/shell/stamp.py by its path (client_proxy is not installed where a build runs): the
    # digest the daemon checks is the one computed here.
    path = Path(__file__).resolve().parent / "src" / "shell" / "stamp.py"
    spec = importlib.util.spec_from_file_location("_client_proxy_stamp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_stamp = _load_stamp()
COMPILED: str = _stamp.COMPILED
SOURCE_STAMP: str = _stamp.STAMP
source_digest = _stamp.source_digest


class EditableTree(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if version != "editable":
            self._compile_into_wheel(root, build_data)
            return
        dev_mode_dirs = self.build_config.dev_mode_dirs
        if len(dev_mode_dirs) != 2:
            raise ValueError(
                f"expected two folders in dev-mode-dirs (links, compiled core), not {dev_mode_dirs}"
            )
        tree = root / dev_mode_dirs[0]
        _remove_links(tree)
        for source, target in self.build_config.sources.items():
            folder = root / source
            if not source or not folder.is_dir():
                raise ValueError(f"sources: {source!r} is not a folder of the project")
            link = tree / target.rstrip(os.sep)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(folder, link.parent), target_is_directory=True)
        if os.environ.get("CLIENT_PROXY_COMPILE", "1") != "0":
            problem = compile_core(root / "src" / "core", root / dev_mode_dirs[1])
            if problem:
                _warn(problem)

    def _compile_into_wheel(self, root: Path, build_data: dict[str, Any]) -> None:
        if os.environ.get("CLIENT_PROXY_COMPILE", "1") == "0":
            return
        out = self._compiled = Path(tempfile.mkdtemp(prefix="client-proxy-compiled-"))
        problem = compile_core(root / "src" / "core", out)
        if problem:
            _warn(problem + "; the wheel is pure Python, and runs client_proxy.core")
            return
        for path in sorted(out.rglob("*")):
            if path.is_file():
                build_data["force_include"][str(path)] = str(path.relative_to(out))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        compiled = getattr(self, "_compiled", None)
        if compiled is not None:  # in the wheel now
            shutil.rmtree(compiled, ignore_errors=True)


def _warn(message: str) -> None:
    print(f"client-proxy: compiled core not built: {message}", file=sys.stderr)


def compile_core(core: Path, out: Path) -> str | None:
    """Compile the modules of ``core`` (src/core) with mypyc as client_proxy.compiled_core into
    ``out`` (a folder for sys.path), unless what is there was compiled from the same source.
    None when done, else why not (no mypyc or setuptools, no C compiler, a compile error)."""
    digest = source_digest(core)
    stamp = out / "client_proxy" / COMPILED / SOURCE_STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return None
    try:  # here, not at the top: both are optional, and the links above need neither
        from mypyc.build import mypycify  # noqa: PLC0415
        from setuptools import Distribution  # noqa: PLC0415
    except ImportError as exc:
        return f"{exc.name} is not installed"
    with tempfile.TemporaryDirectory(prefix="client-proxy-mypyc-") as tmp:
        stage = Path(tmp, "stage")
        package = stage / "client_proxy" / COMPILED
        package.mkdir(parents=True)
        (stage / "client_proxy" / "__init__.py").write_text("")  # for mypy's module names only
        for module in sorted(core.glob("*.py")):
            shutil.copy2(module, package / module.name)
        built = Path(tmp, "built")
        cwd = os.getcwd()
        os.chdir(stage)  # mypyc names modules from the paths it is given
        try:
            modules = [str(p.relative_to(stage)) for p in sorted(package.glob("*.py"))]
            extensions = mypycify(modules, opt_level="3", group_name=f"client_proxy.{COMPILED}")
            dist = Distribution({"name": "client-proxy-compiled-core", "ext_modules": extensions})
            dist.verbose = False  # type: ignore[attr-defined]
            build_ext = dist.get_command_obj("build_ext")
            build_ext.build_lib = str(built)  # type: ignore[attr-defined]
            build_ext.build_temp = str(Path(tmp, "temp"))  # type: ignore[attr-defined]
            dist.run_command("build_ext")
        except (Exception, SystemExit) as exc:  # mypy's and distutils' errors alike
            return f"mypyc failed ({type(exc).__name__}: {exc}); its output above says why"
        finally:
            os.chdir(cwd)
        target = out / "client_proxy" / COMPILED
        if target.exists():
            shutil.rmtree(target)
        for old in (out / "client_proxy").glob(f"{COMPILED}__mypyc*"):
            old.unlink()
        target.mkdir(parents=True)
        for path in built.rglob("*.so"):
            dest = out / path.relative_to(built)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        (target / SOURCE_STAMP).write_text(digest + "\n")
    return None


if __name__ == "__main__":
    # `python hatch_build.py compile [OUT]`: build/compiled for the editable install (bootstrap).
    if sys.argv[1:2] != ["compile"] or len(sys.argv) > 3:
        sys.exit("usage: python hatch_build.py compile [OUT]")
    here = Path(__file__).resolve().parent
    if os.environ.get("CLIENT_PROXY_COMPILE", "1") != "0":
        problem = compile_core(
            here / "src" / "core",
            Path(sys.argv[2]) if len(sys.argv) > 2 else here / "build/compiled",
        )
        if problem:
            _warn(problem)


def _remove_links(tree: Path) -> None:
    """Removes the symlinks a previous install made under `tree` (a mapping may have gone since),
    and the folders that leaves empty; never a regular file, and never what a link points to."""
    if not tree.is_dir():
        return
    for folder, dirs, files in os.walk(tree, topdown=False):
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
