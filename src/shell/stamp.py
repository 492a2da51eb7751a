"""What ties the compiled core to the source it was compiled from: the digest of the core's
modules, recorded beside the compiled copy when it is built (hatch_build.py, which loads this
file by its path: it runs where client_proxy is not installed) and checked before the daemon
runs it (:mod:`client_proxy.shell.corelib`). Standard library only, for that reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["COMPILED", "STAMP", "source_digest"]

#: The compiled core's package, under client_proxy.
COMPILED = "compiled_core"
#: The file in it that holds :func:`source_digest` of the source it was compiled from.
STAMP = "SOURCE-SHA256"


def source_digest(core: Path) -> str:
    """SHA-256 over the core's modules in ``core`` (names and contents, in name order)."""
    digest = hashlib.sha256()
    for module in sorted(core.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes() + b"\0")
    return digest.hexdigest()
