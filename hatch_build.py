"""Hatchling build hook: lays out the editable install's `client_proxy` folder at install time.

The repository keeps src/core, src/shell, src/sim and src/testing; they install as
client_proxy.core, client_proxy.shell, client_proxy.sim and client_proxy.testing. The wheel renames
them through `[tool.hatch.build.targets.wheel.sources]`, but an editable install cannot: hatchling's
own editable mode (the `editables` import hook) maps top-level names only, and an import hook of any
kind is invisible to mypy. So for an editable build only, this hook makes, inside the folder that
`dev-mode-dirs` names (build/editable, ignored by git), one symlink per `sources` entry:
client_proxy/core -> src/core and so on. The editable wheel's .pth file puts that folder on
sys.path. The links point at folders, so edited and new modules take effect without reinstalling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class EditableTree(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version != "editable":
            return
        root = Path(self.root)
        dev_mode_dirs = self.build_config.dev_mode_dirs
        if len(dev_mode_dirs) != 1:
            raise ValueError(f"expected one folder in dev-mode-dirs, not {dev_mode_dirs}")
        tree = root / dev_mode_dirs[0]
        _remove_links(tree)
        for source, target in self.build_config.sources.items():
            folder = root / source
            if not source or not folder.is_dir():
                raise ValueError(f"sources: {source!r} is not a folder of the project")
            link = tree / target.rstrip(os.sep)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(folder, link.parent), target_is_directory=True)


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
