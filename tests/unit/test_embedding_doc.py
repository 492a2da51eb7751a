"""docs/embedding.md is the test of the core's public API: everything it uses is exported by
client_proxy.core, and everything exported is named in its "API at a glance"."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

from client_proxy import core
from client_proxy.core._link import MAX_FLUSHES

DOC = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_the_api_at_a_glance_names_exactly_what_the_core_exports() -> None:
    glance = _section(DOC.read_text(encoding="utf-8"), "The API at a glance")
    named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", glance))
    exported = set(core.__all__)
    assert exported - named == set(), "exported but not in the doc's API at a glance"
    assert {n for n in named if n in vars(core) and not n.startswith("_")} == exported


def test_the_doc_imports_only_what_the_core_exports() -> None:
    text = DOC.read_text(encoding="utf-8")
    imported: set[str] = set()
    for block in re.findall(r"from client_proxy\.core import \(([^)]*)\)", text):
        imported |= {n.strip() for n in block.replace("\n", " ").split(",") if n.strip()}
    for line in re.findall(r"from client_proxy\.core import ([^(\n]+)", text):
        imported |= {n.strip() for n in line.split(",") if n.strip() and n.strip() != "*"}
    assert imported, "the doc shows how to import the core"
    assert imported <= set(core.__all__), imported - set(core.__all__)


def test_the_core_docstring_example_runs() -> None:
    """The REPL session in client_proxy.core's docstring is what the core does."""
    result = doctest.testmod(core)
    assert result.attempted >= 10
    assert result.failed == 0


def test_the_number_of_fresh_streams_the_doc_promises_is_the_cores() -> None:
    """Rule 8 tells a transport how often the core asks for a fresh stream after a stop."""
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    found = re.search(r"the core asks again at most (\w+) times", text)
    assert found is not None
    words = {"once": 1, "twice": 2, "two": 2, "three": 3, "four": 4, "five": 5}
    assert words[found.group(1)] == MAX_FLUSHES
