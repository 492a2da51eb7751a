"""The mutation tester itself (scripts/mutate.py): which mutants it makes, that a sample is
repeatable, that a mutant is written and undone exactly, and the arithmetic of the score."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate", ROOT / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


mutate = _load()

SNIPPET = textwrap.dedent(
    '''\
    """A module docstring is not mutated."""

    from __future__ import annotations

    from typing import TYPE_CHECKING, Literal

    if TYPE_CHECKING:
        from collections.abc import Sequence

    __all__ = ["f"]

    Mode = Literal["a", "b"]
    LIMIT = 3


    def f(a: int, b: Sequence[str] = ()) -> bool:
        """Nor is a function's."""
        if a < LIMIT and not b:
            a += 1
        return a == 2
    '''
)


def triples(source: str) -> list[tuple[str, str, str]]:
    return [(m.operator, m.original, m.mutated) for m in mutate.mutants_of_source("m.py", source)]


def test_a_snippet_gets_exactly_the_expected_mutants() -> None:
    assert triples(SNIPPET) == [
        ("number", "3", "4"),
        ("number", "3", "2"),
        ("boolop", "a < LIMIT and (not b)", "a < LIMIT or not b"),
        ("compare", "a < LIMIT", "a <= LIMIT"),
        ("compare", "a < LIMIT", "a >= LIMIT"),
        ("not", "not b", "b"),
        ("binop", "a += 1", "a -= 1"),
        ("delete", "a += 1", "pass"),
        ("number", "1", "2"),
        ("number", "1", "0"),
        ("return", "return a == 2", "return None"),
        ("compare", "a == 2", "a != 2"),
        ("number", "2", "3"),
        ("number", "2", "1"),
    ]


def test_what_is_left_alone() -> None:
    """Docstrings, annotations, __all__, TYPE_CHECKING blocks, type aliases, TypeVar and f-strings
    are left alone; the main guard too; a pragma opts a line out."""
    source = textwrap.dedent(
        """\
        from typing import TypeVar
        T = TypeVar("T")
        Event = Up | Down | None
        __slots__ = ("x",)
        def g(x: "int" = 0) -> "str":
            y: "int" = 1
            return f"{x + 1}"
        def h() -> bool:
            return True  # pragma: no mutate
        if __name__ == "__main__":
            g(1)
        """
    )
    assert triples(source) == [
        ("number", "0", "1"),
        ("number", "0", "-1"),
        ("number", "1", "2"),
        ("number", "1", "0"),
        ("return", "return f'{x + 1}'", "return None"),
    ]


def test_strings_bools_and_branch_statements() -> None:
    source = textwrap.dedent(
        """\
        def k(x):
            y = "text"
            for i in x:
                if i is None:
                    continue
                y = f(i, flag=True)
            else:
                raise ValueError("empty")
            return y
        """
    )
    assert triples(source) == [
        ("string", "'text'", "''"),
        ("compare", "i is None", "i is not None"),
        ("delete", "continue", "pass"),
        ("delete", "y = f(i, flag=True)", "pass"),
        ("bool", "True", "False"),
        ("delete", "raise ValueError('empty')", "pass"),
        ("string", "'empty'", "''"),
        ("return", "return y", "return None"),
    ]


def test_only_code_outside_functions_runs_at_import() -> None:
    source = "X = 1\nclass C:\n    y = 2\n    def m(self, z=3):\n        return 4\n"
    at_import = {m.original: m.import_time for m in mutate.mutants_of_source("m.py", source)}
    assert at_import == {"1": True, "2": True, "3": True, "return 4": False, "4": False}


def test_every_mutant_of_the_core_writes_back_as_source_of_its_mutated_tree() -> None:
    """The splice changes only the node's span, and re-parses to the original tree with that
    one node replaced (mutated_source checks it, raising MutationError otherwise)."""
    for path in mutate.target_files(ROOT, "src/core"):
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_bytes()
        for m in mutate.mutants_of_source(rel, source.decode()):
            out = mutate.mutated_source(source, m)
            assert out != source
            lines, new_lines = source.splitlines(), out.splitlines()
            assert len(new_lines) == len(lines) - (m.end_line - m.line)
            assert lines[: m.line - 1] == new_lines[: m.line - 1]


def test_the_parentheses_a_splice_needs_are_added() -> None:
    source = "def f(x, y):\n    return x and not (y or x)\n"
    (m,) = [m for m in mutate.mutants_of_source("m.py", source) if m.operator == "not"]
    assert mutate.mutated_source(source.encode(), m) == b"def f(x, y):\n    return x and (y or x)\n"


def test_ids_survive_line_shifts_and_number_repeats() -> None:
    source = "def f(x):\n    if x:\n        return x + 1\n    return x + 1\n"
    shifted = "# a comment\n\n" + source
    ids = [m.id for m in mutate.mutants_of_source("m.py", source)]
    assert ids == [m.id for m in mutate.mutants_of_source("m.py", shifted)]
    assert len(set(ids)) == len(ids)
    assert "m.py::f::x + 1 -> x - 1" in ids and "m.py::f::x + 1 -> x - 1 #1" in ids


def test_a_sample_is_repeatable_with_its_seed() -> None:
    everything = mutate.enumerate_mutants(ROOT, "src/core")
    assert everything == mutate.enumerate_mutants(ROOT, "src/core")
    one = mutate.draw(everything, 40, seed=1)
    assert one == mutate.draw(everything, 40, seed=1)
    assert one != mutate.draw(everything, 40, seed=2)
    assert len(one) == 40 and len({m.key for m in one}) == 40
    order = {m.key: i for i, m in enumerate(everything)}
    assert [order[m.key] for m in one] == sorted(order[m.key] for m in one)
    assert mutate.draw(everything, len(everything) + 5, seed=1) == everything


def test_a_mutant_in_place_is_undone_byte_for_byte(tmp_path: Path) -> None:
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    original = b"# -*- coding: utf-8 -*-\r\ndef f(x):\r\n    return x < 1  # caf\xc3\xa9\r\n"
    module.write_bytes(original)
    os.utime(module, ns=(1_000_000_000, 2_000_000_000))
    mode = module.stat().st_mode
    (cache := module.parent / "__pycache__").mkdir()
    m = next(
        m for m in mutate.mutants_of_source("mod.py", original.decode()) if m.mutated == "x <= 1"
    )
    mutated = mutate.mutated_source(original, m)
    assert mutated == original.replace(b"x < 1", b"x <= 1")

    with mutate.mutant_in_place(module, mutated):
        assert module.read_bytes() == mutated
        assert not cache.exists()
    assert module.read_bytes() == original
    assert module.stat().st_mtime_ns == 2_000_000_000 and module.stat().st_mode == mode

    with pytest.raises(KeyboardInterrupt), mutate.mutant_in_place(module, mutated):
        raise KeyboardInterrupt
    assert module.read_bytes() == original
    assert sorted(p.name for p in module.parent.iterdir()) == ["mod.py"]


def test_the_wilson_interval_matches_known_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3.
    assert mutate.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert mutate.wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert mutate.wilson(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)
    assert mutate.wilson(1, 29) == pytest.approx((0.0061, 0.1718), abs=5e-5)
    # Closed forms: with none or all killed, the far bound is n / (n + z^2).
    z2 = 1.959963984540054**2
    assert mutate.wilson(10, 10)[0] == pytest.approx(10 / (10 + z2))
    assert mutate.wilson(10, 10)[1] == pytest.approx(1.0)
    assert mutate.wilson(0, 0) == (0.0, 1.0)


def test_equivalents_are_read_and_matched_by_key(tmp_path: Path) -> None:
    source = "def f(x):\n    return x + 1\n"
    m = next(m for m in mutate.mutants_of_source("src/core/m.py", source) if m.operator == "binop")
    listing = tmp_path / "equivalent.toml"
    listing.write_text(
        "[[equivalent]]\n"
        f'file = "{m.file}"\nscope = "{m.scope}"\n'
        f"original = '{m.original}'\nmutated = '{m.mutated}'\n"
        'reason = "x is always 0 here"\n',
        encoding="utf-8",
    )
    assert mutate.load_equivalents(listing) == {m.key: "x is always 0 here"}


def test_selection_runs_the_tests_that_reach_the_line_quickest_first() -> None:
    source = (
        "X = 1\ndef f(x):\n    return x + X\ndef g(x):\n    return -x\ndef h():\n    return 2\n"
    )
    ms = {m.original: m for m in mutate.mutants_of_source("m.py", source)}
    cover = mutate.CoverageMap(
        tests=["t::slow", "t::fast", "t::other"],
        seconds=[5.0, 0.1, 1.0],
        lines={"m.py": {3: [0, 1], 5: [mutate.CoverageMap.IMPORT, 2]}},
    )
    assert cover.select(ms["return x + X"]) == ["t::fast", "t::slow"]
    assert cover.select(ms["1"]) == ["t::fast", "t::other", "t::slow"]  # runs at import
    assert cover.select(ms["return -x"]) == ["t::fast", "t::other", "t::slow"]  # "" context
    assert cover.select(ms["return 2"]) == []  # no test reaches it


def test_a_survivor_prints_as_file_line_original_and_mutated() -> None:
    source = "def f(x):\n    return x < 1\n"
    m = next(m for m in mutate.mutants_of_source("src/core/m.py", source) if m.mutated == "x <= 1")
    assert m.describe() == "src/core/m.py:2: x < 1 -> x <= 1"
    assert ast.parse(m.mutated, mode="eval")


def test_coverage_contexts_name_tests_modules_or_the_import() -> None:
    tests = ["tests/a.py::t1", "tests/a.py::t2[x|y]", "tests/b.py::t3"]
    index = {t: i for i, t in enumerate(tests)}
    seconds = [0.0, 0.0, 0.0]

    def read(context: str) -> list[int]:
        return mutate._context_tests(context, index, tests, seconds)

    assert read("") == [mutate.CoverageMap.IMPORT]
    assert read("|subprocess") == [mutate.CoverageMap.IMPORT]
    assert read("tests/a.py::t2[x|y]|run") == [1]
    assert read("tests/b.py::t3|subprocess") == [2]
    assert read("tests/a.py|collect") == [0, 1]
    assert read("tests/c.py::t4|setup") == [3] and tests[3] == "tests/c.py::t4"
