"""`just abuse` and `just bench` share docs/benchmarks.md: each keeps the other's part."""

from __future__ import annotations

from pathlib import Path

from benchmarks import abuse, bench


def test_abuse_replaces_its_own_section_and_bench_keeps_it(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nthe bench's table\n", encoding="utf-8")
    first = f"{abuse.SECTION_START}\n## Hostile loads\nfirst\n{abuse.SECTION_END}\n"
    abuse.write_section(tmp_path, first)
    second = first.replace("first", "second")
    abuse.write_section(tmp_path, second)
    text = page.read_text(encoding="utf-8")
    assert text == "# Benchmarks\n\nthe bench's table\n\n" + second
    # What bench.py appends to the page it writes anew.
    assert bench.kept_sections(text).strip() == second.strip()
    assert bench.kept_sections("# Benchmarks\n") == ""
