"""The core is pure: no clock, no randomness, no I/O, no network, no slixmpp, no asyncio
(DESIGN.md, "Architecture"; STYLE.md, "What to avoid").

Two independent checks: what importing ``client_proxy.core`` pulls into a fresh interpreter, and
what the source of ``src/core`` names in its imports and calls.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "core"
CORE_FILES = sorted(CORE.glob("*.py"))

#: What the core may import: the issue's list of pure standard-library modules and immutables,
#: plus two more the core has needed since, both pure functions of their input: `re` (resource
#: patterns, the ASCII fast path of the JAT check) and `hashlib` (rendezvous hashing for sticky
#: routing: a deterministic digest, not a source of randomness), and for sealed ids `hmac`
#: (compare_digest, a constant-time comparison) and `binascii` (base64): pure functions too.
ALLOWED = frozenset(
    {
        "__future__",
        "collections",
        "dataclasses",
        "enum",
        "functools",
        "immutables",
        "itertools",
        "operator",
        "math",
        "stringprep",
        "typing",
        "unicodedata",
        "re",
        "hashlib",
        "hmac",
        "binascii",
    }
)

#: Modules that would mean a clock, randomness, I/O, the network, or the shell's libraries.
FORBIDDEN = frozenset(
    {
        "asyncio",
        "datetime",
        "http",
        "io",
        "logging",
        "os",
        "pathlib",
        "random",
        "secrets",
        "select",
        "selectors",
        "shutil",
        "slixmpp",
        "socket",
        "ssl",
        "subprocess",
        "sys",
        "tempfile",
        "threading",
        "time",
        "urllib",
        "uuid",
    }
)

#: Builtins that read or write the outside world, or import behind the scanner's back.
FORBIDDEN_CALLS = frozenset(
    {"open", "print", "input", "exec", "eval", "compile", "__import__", "breakpoint"}
)

PROBE = """
import json, sys
before = set(sys.modules)
import client_proxy.core
print(json.dumps({"new": sorted(set(sys.modules) - before), "all": sorted(sys.modules)}))
"""


def test_core_files_are_found():
    assert {p.name for p in CORE_FILES} >= {"__init__.py", "_machine.py", "_jat.py"}


def test_importing_the_core_pulls_in_neither_slixmpp_nor_asyncio_nor_any_effect():
    """In a fresh interpreter (this one has slixmpp and asyncio loaded already)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    modules = json.loads(done.stdout)
    loaded = {m.split(".")[0] for m in modules["all"]}
    assert "slixmpp" not in loaded
    assert "asyncio" not in loaded
    new = {m.split(".")[0] for m in modules["new"]}
    assert not new & FORBIDDEN, f"importing client_proxy.core loads {sorted(new & FORBIDDEN)}"
    assert "client_proxy" in new


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_only_pure_modules(path: Path):
    """An AST scan of every module of ``src/core``: absolute imports only from the allowed
    list (relative imports stay inside the core)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED, f"{path.name} imports {sorted(imported - ALLOWED)}"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_calls_no_effectful_builtin(path: Path):
    """No file or console I/O and no dynamic import or evaluation in the core."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not called & FORBIDDEN_CALLS, f"{path.name} calls {sorted(called & FORBIDDEN_CALLS)}"
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "importlib" not in names and "__import__" not in names, path.name
