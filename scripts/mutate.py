#!/usr/bin/env python3
"""Mutation testing of the core: ``just mutate`` (defaults ``--seed 1 --sample 300``).

A mutant is the core with one small change (``<`` for ``<=``, ``and`` for ``or``, a constant
off by one, a statement in a branch deleted, ...). The property and unit suites should fail on
it: the mutant is then *killed*. A mutant they pass *survives*, and points at behaviour no test
pins down (or at a change that makes no difference: an *equivalent* mutant, listed by hand in an
``--equivalent`` file and left out of the score).

How a run goes:

1. Every mutant of every ``*.py`` under ``src/core`` is enumerated from the AST, in a fixed order,
   whatever the modules are called; ``--sample N --seed S`` draws N of them uniformly (the same N
   for the same S and the same core), ``--all`` takes them all.
2. One coverage run of the suites (pytest-cov with a context per test, plus the Python
   subprocesses the tests start) maps each line of the core to the tests that run it. It is
   cached in ``.mutate-cache/`` under a hash of the sources and tests.
3. Each mutant is written over its module *in place*, so that the subprocesses the tests start
   import it too, and only the tests that run its line are run (``-x``, ``CI=true``, so the
   Hypothesis tests replay the same derandomized examples). A mutant of code that runs at import
   time (module or class level, defaults, decorators) runs every test. The module is restored
   byte for byte afterwards, on an exception or Ctrl-C too; the run refuses to start unless
   ``src/core`` is clean in git, so that ``git checkout -- src/core`` can always undo a run that
   was killed outright. ``--jobs N`` (or ``--copy``) works in N copies of the tree instead.
4. The score is killed / (killed + survived), with a 95% Wilson interval, since a sample only
   estimates it; survivors are printed as ``file:line: original -> mutated``, and ``--report``
   writes everything as JSON.

It lives in scripts/, not in src/testing: it is a tool for this repository (it reads git and
rewrites files under src/), not part of the installed ``client_proxy`` package, and it must not
be something the core could import. It needs only the standard library and, for the coverage
run, coverage and pytest-cov (the dev extra).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
DEFAULT_TARGET = "src/core"
DEFAULT_SUITES = ("tests/property", "tests/unit")
DEFAULT_IMPORT_NAME = "client_proxy.core"
CACHE_DIR = ".mutate-cache"
PRAGMA = "pragma: no mutate"
MAP_FORMAT = 3  # of the cached coverage map: bump it when build_coverage_map changes

#: Each operator, in the order the mutants of one node are listed.
OPERATORS = ("compare", "boolop", "binop", "not", "bool", "number", "string", "return", "delete")

# Boundary shift and negation of each comparison (as in PIT's "conditionals boundary" and
# "negate conditionals"): two mutants for an ordering, one for the others.
_COMPARE_SWAPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.LtE, ast.GtE),
    ast.LtE: (ast.Lt, ast.Gt),
    ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
}
_BINARY_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitOr,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
# Calls whose arguments are type-level: TypeVar("T"), NewType("Id", str), ...
_TYPE_CALLS = frozenset(
    {"TypeVar", "NewType", "ParamSpec", "TypeVarTuple", "NamedTuple", "TypedDict", "TypeAliasType"}
)
# Subscripted names that make a module-level assignment a type alias: X = Literal["a", "b"].
_TYPE_SUBSCRIPTS = frozenset(
    {"Literal", "Union", "Optional", "Callable", "Annotated", "ClassVar", "Final", "Type"}
    | {"Tuple", "List", "Dict", "Set", "FrozenSet", "tuple", "list", "dict", "set", "frozenset"}
    | {"Mapping", "Sequence", "Iterable", "Iterator", "Generator", "type"}
)
_DUNDER_LISTS = frozenset({"__all__", "__slots__", "__match_args__"})
_SIMPLE_STATEMENTS = (
    ast.Expr,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.Raise,
    ast.Assert,
    ast.Delete,
    ast.Break,
    ast.Continue,
)
_BRANCHING = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.TryStar,
    ast.ExceptHandler,
    ast.match_case,
)

Step = tuple[str, int]  # a field of a node, and the index in it when it is a list (else -1)
Key = tuple[str, str, str, str, int]  # file, scope, original, mutated, occurrence


class MutationError(Exception):
    """A mutant that cannot be written back as source that parses to the mutated tree."""


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One mutant, located in the source and named independently of line numbers."""

    file: str  # relative to the repository, posix: "src/core/_jat.py"
    scope: str  # qualified name of the enclosing function or class, or "<module>"
    operator: str  # one of OPERATORS
    original: str  # ast.unparse of the node replaced
    mutated: str  # ast.unparse of its replacement
    occurrence: int  # among the mutants of this file with the same scope, original and mutated
    line: int
    col: int  # UTF-8 byte offset, as the ast module gives it
    end_line: int
    end_col: int
    is_statement: bool
    import_time: bool  # runs when the module is imported: every test may depend on it
    cover_lines: tuple[int, ...]  # the lines whose coverage says which tests reach the node
    path: tuple[Step, ...]  # from the module to the node replaced

    @property
    def key(self) -> Key:
        return (self.file, self.scope, self.original, self.mutated, self.occurrence)

    @property
    def id(self) -> str:
        """Stable across line shifts and reformatting; changes when the code itself does."""
        text = f"{self.file}::{self.scope}::{self.original} -> {self.mutated}"
        return text if self.occurrence == 0 else f"{text} #{self.occurrence}"

    def describe(self, width: int = 100) -> str:
        before, after = _clip(self.original, width), _clip(self.mutated, width)
        return f"{self.file}:{self.line}: {before} -> {after}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------------------------
# Enumerating the mutants


@dataclasses.dataclass(frozen=True)
class _Context:
    scope: str = "<module>"
    in_function: bool = False  # inside a function or lambda body: runs when called
    in_branch: bool = False  # a statement list of an if/for/while/with/try/match, in a function
    skip: bool = False  # annotations, type expressions, __all__, TYPE_CHECKING, f-strings
    cover: tuple[int, ...] = ()  # lines of the innermost statement (its header if compound)


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_docstring(body: Sequence[ast.stmt], index: int) -> bool:
    if index != 0 or not body:
        return False
    first = body[0]
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


def _is_class_name(node: ast.AST) -> bool:
    name = _name_of(node)
    if name is None:
        return False
    bare = name.lstrip("_")
    return bool(bare) and bare[0].isupper() and any(c.islower() for c in bare)


def _is_type_expression(node: ast.AST) -> bool:
    """A module- or class-level value that is a type alias: ``Literal[...]``, ``A | B | None``
    of class names. (``_A | _B`` of constants is left alone: it may be a set union.)"""
    if isinstance(node, ast.Subscript):
        return _name_of(node.value) in _TYPE_SUBSCRIPTS
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return all(
            _is_type_expression(side)
            or _is_class_name(side)
            or (isinstance(side, ast.Constant) and side.value is None)
            for side in (node.left, node.right)
        )
    return False


def _targets_dunder_list(node: ast.AST) -> bool:
    if isinstance(node, ast.Assign):
        return any(_name_of(t) in _DUNDER_LISTS for t in node.targets)
    if isinstance(node, ast.AnnAssign | ast.AugAssign):
        return _name_of(node.target) in _DUNDER_LISTS
    return False


def _is_type_checking(test: ast.expr) -> bool:
    return _name_of(test) == "TYPE_CHECKING"


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and _name_of(test.left) == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _header_lines(node: ast.stmt) -> tuple[int, ...]:
    """The lines coverage reports for a statement: all of a simple one, the header of a
    compound one (``if a < b:`` without its body)."""
    end = node.end_lineno or node.lineno
    body = getattr(node, "body", None)
    if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
        first = body[0].lineno
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return tuple(range(start, max(first, node.lineno + 1)))
        end = max(node.lineno, first - 1)
    return tuple(range(node.lineno, end + 1))


class _Finder:
    """Walks one module's AST in field order and lists its mutants (deterministically)."""

    def __init__(self, file: str, source: str, operators: frozenset[str]) -> None:
        self.file = file
        self.lines = re.split(r"\r\n|\r|\n", source)  # as the parser counts lines
        self.operators = operators
        self.found: list[Mutant] = []

    def run(self, tree: ast.Module) -> list[Mutant]:
        self._visit(tree, (), _Context())
        seen: Counter[tuple[str, str, str, str]] = Counter()
        numbered = []
        for m in self.found:
            base = (m.file, m.scope, m.original, m.mutated)
            numbered.append(dataclasses.replace(m, occurrence=seen[base]))
            seen[base] += 1
        return numbered

    # -- the walk

    def _visit(self, node: ast.AST, path: tuple[Step, ...], ctx: _Context) -> None:
        if isinstance(node, ast.stmt):
            ctx = dataclasses.replace(ctx, cover=_header_lines(node))
        elif isinstance(node, ast.match_case):
            end = node.body[0].lineno - 1 if node.body else node.pattern.lineno
            ctx = dataclasses.replace(ctx, cover=tuple(range(node.pattern.lineno, end + 1)))
        if isinstance(node, ast.JoinedStr):
            return  # f-string parts: 3.11's positions inside them are not reliable to splice
        if not ctx.skip:
            self._mutate(node, path, ctx)
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        child = self._child_context(node, field, index, item, ctx)
                        if child is not None:
                            self._visit(item, (*path, (field, index)), child)
            elif isinstance(value, ast.AST):
                child = self._child_context(node, field, -1, value, ctx)
                if child is not None:
                    self._visit(value, (*path, (field, -1)), child)

    def _child_context(
        self, node: ast.AST, field: str, index: int, child: ast.AST, ctx: _Context
    ) -> _Context | None:
        """The context of ``node.field[index]``; None to leave that subtree alone."""
        body = getattr(node, field, None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and field == "body"
            and isinstance(body, list)
            and _is_docstring(body, index)
        ):
            return None
        skipped = dataclasses.replace(ctx, skip=True)
        if field in ("annotation", "returns", "type_params", "type_comment"):
            return skipped
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if field == "body":
                scope = node.name if ctx.scope == "<module>" else f"{ctx.scope}.{node.name}"
                return _Context(scope=scope, in_function=True, skip=ctx.skip, cover=ctx.cover)
            return ctx  # decorators and defaults run in the enclosing scope
        if isinstance(node, ast.ClassDef):
            if field == "body":
                scope = node.name if ctx.scope == "<module>" else f"{ctx.scope}.{node.name}"
                return dataclasses.replace(ctx, scope=scope, in_branch=False)
            return ctx
        if isinstance(node, ast.Lambda) and field == "body":
            return dataclasses.replace(ctx, scope=f"{ctx.scope}.<lambda>", in_function=True)
        if _targets_dunder_list(node):
            return skipped
        if isinstance(node, ast.AnnAssign) and _name_of(node.annotation) == "TypeAlias":
            return skipped
        if (
            isinstance(node, ast.Assign | ast.AnnAssign)
            and field == "value"
            and not ctx.in_function
            and _is_type_expression(child)
        ):
            return skipped
        if isinstance(node, ast.If) and (
            _is_main_guard(node.test) or (_is_type_checking(node.test) and field != "orelse")
        ):
            return skipped
        if isinstance(node, ast.Call):
            callee = _name_of(node.func)
            if callee in _TYPE_CALLS and field in ("args", "keywords"):
                return skipped
            if callee == "cast" and field == "args" and index == 0:
                return skipped
        if isinstance(node, _BRANCHING) and field in ("body", "orelse", "finalbody"):
            return dataclasses.replace(ctx, in_branch=ctx.in_function)
        return ctx

    # -- the mutants of one node

    def _mutate(self, node: ast.AST, path: tuple[Step, ...], ctx: _Context) -> None:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for swap in _COMPARE_SWAPS.get(type(op), ()):
                    ops = [*node.ops]
                    ops[i] = swap()
                    self._add(
                        node, ast.Compare(node.left, ops, node.comparators), "compare", path, ctx
                    )
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self._add(node, ast.BoolOp(other, node.values), "boolop", path, ctx)
        elif isinstance(node, ast.BinOp):
            if (binary := _BINARY_SWAPS.get(type(node.op))) is not None:
                self._add(node, ast.BinOp(node.left, binary(), node.right), "binop", path, ctx)
        elif isinstance(node, ast.AugAssign):
            if (binary := _BINARY_SWAPS.get(type(node.op))) is not None:
                new = ast.AugAssign(node.target, binary(), node.value)
                self._add(node, new, "binop", path, ctx)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._add(node, node.operand, "not", path, ctx)
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                self._add(node, ast.Constant(not value), "bool", path, ctx)
            elif isinstance(value, int):
                for new_value in (value + 1, value - 1):
                    self._add(node, _number(new_value), "number", path, ctx)
            elif isinstance(value, str | bytes) and value:
                self._add(node, ast.Constant(value[:0]), "string", path, ctx)
        elif isinstance(node, ast.Return) and _returns_something(node):
            self._add(node, ast.Return(ast.Constant(None)), "return", path, ctx)
        if (
            isinstance(node, _SIMPLE_STATEMENTS)
            and ctx.in_branch
            and not (isinstance(node, ast.AnnAssign) and node.value is None)
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        ):
            self._add(node, ast.Pass(), "delete", path, ctx)

    def _add(
        self,
        node: ast.expr | ast.stmt,
        replacement: ast.AST,
        operator: str,
        path: tuple[Step, ...],
        ctx: _Context,
    ) -> None:
        if operator not in self.operators:
            return
        line = node.lineno
        if PRAGMA in self.lines[line - 1]:
            return
        statement = isinstance(node, ast.stmt)
        end_line = node.end_lineno if node.end_lineno is not None else line
        end_col = node.end_col_offset if node.end_col_offset is not None else node.col_offset
        self.found.append(
            Mutant(
                file=self.file,
                scope=ctx.scope,
                operator=operator,
                original=ast.unparse(node),
                mutated=ast.unparse(replacement),
                occurrence=0,
                line=line,
                col=node.col_offset,
                end_line=end_line,
                end_col=end_col,
                is_statement=statement,
                import_time=not ctx.in_function,
                cover_lines=ctx.cover,
                path=path,
            )
        )


def _returns_something(node: ast.Return) -> bool:
    value = node.value
    return value is not None and not (isinstance(value, ast.Constant) and value.value is None)


def _number(value: int) -> ast.expr:
    """As the parser reads it back: -1 is a unary minus applied to 1."""
    return ast.UnaryOp(ast.USub(), ast.Constant(-value)) if value < 0 else ast.Constant(value)


def mutants_of_source(file: str, source: str, operators: Iterable[str] = OPERATORS) -> list[Mutant]:
    """The mutants of one module's source, in a fixed order."""
    tree = ast.parse(source, filename=file)
    return _Finder(file, source, frozenset(operators)).run(tree)


def target_files(root: Path, target: str) -> list[Path]:
    """Every ``*.py`` under the target directory, in a fixed order (by relative path)."""
    base = root / target
    files = [p for p in base.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def enumerate_mutants(
    root: Path, target: str, operators: Iterable[str] = OPERATORS
) -> list[Mutant]:
    ops = tuple(operators)
    found: list[Mutant] = []
    for path in target_files(root, target):
        rel = path.relative_to(root).as_posix()
        found.extend(mutants_of_source(rel, path.read_text(encoding="utf-8"), ops))
    return found


def draw(mutants: Sequence[Mutant], sample: int | None, seed: int) -> list[Mutant]:
    """A uniform sample without replacement (all of them if ``sample`` is None or too big),
    kept in enumeration order. The same seed and the same mutants give the same sample."""
    if sample is None or sample >= len(mutants):
        return list(mutants)
    picked = sorted(random.Random(seed).sample(range(len(mutants)), sample))
    return [mutants[i] for i in picked]


# --------------------------------------------------------------------------------------------
# Writing a mutant back as source


def _navigate(tree: ast.AST, path: Sequence[Step]) -> tuple[ast.AST, str, int]:
    node = tree
    for field, index in path[:-1]:
        value = getattr(node, field)
        node = value[index] if index >= 0 else value
    field, index = path[-1]
    return node, field, index


def mutated_source(source: bytes, mutant: Mutant) -> bytes:
    """``source`` with the mutant spliced in: only the node's own span changes (comments, layout
    and line numbers elsewhere stay). Checked: the result parses to exactly the original tree
    with that one node replaced, or MutationError."""
    tree = ast.parse(source)
    parent, field, index = _navigate(tree, mutant.path)
    replacement: ast.AST
    if mutant.is_statement:
        replacement = ast.parse(mutant.mutated).body[0]
    else:
        replacement = ast.parse(mutant.mutated, mode="eval").body
    if index >= 0:
        getattr(parent, field)[index] = replacement
    else:
        setattr(parent, field, replacement)
    expected = ast.dump(tree)

    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    lo = starts[mutant.line - 1] + mutant.col
    hi = starts[mutant.end_line - 1] + mutant.end_col
    texts = [mutant.mutated] if mutant.is_statement else [mutant.mutated, f"({mutant.mutated})"]
    for text in texts:
        candidate = source[:lo] + text.encode("utf-8") + source[hi:]
        try:
            if ast.dump(ast.parse(candidate)) == expected:
                return candidate
        except SyntaxError:
            continue
    raise MutationError(f"cannot write {mutant.id} back as source")


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.mutate-tmp")  # no .py: globs of *.py miss it
    temporary.write_bytes(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


@contextlib.contextmanager
def mutant_in_place(path: Path, data: bytes) -> Iterator[None]:
    """Writes ``data`` over ``path`` for the duration of the block, then puts the original bytes
    and modification time back, whatever happens in the block. The module's __pycache__ is
    dropped on both sides, so that no bytecode of one version is ever taken for the other
    (a mutant can have the same size and the same mtime second as the original)."""
    original = path.read_bytes()
    stat = path.stat()
    cache = path.parent / "__pycache__"
    shutil.rmtree(cache, ignore_errors=True)
    try:
        _write_atomically(path, data, stat.st_mode)
        yield
    finally:
        _write_atomically(path, original, stat.st_mode)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        shutil.rmtree(cache, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Which tests reach which line


@dataclasses.dataclass
class CoverageMap:
    """Node ids in suite order, their durations in the coverage run, and for each line of the
    target the indices of the tests that ran it (-1: it ran outside any test, at import)."""

    tests: list[str]
    seconds: list[float]
    lines: dict[str, dict[int, list[int]]]
    run_seconds: float = 0.0
    cached: bool = False

    IMPORT = -1

    def by_speed(self, indices: Iterable[int]) -> list[str]:
        return [self.tests[i] for i in sorted(set(indices), key=lambda i: (self.seconds[i], i))]

    def select(self, mutant: Mutant) -> list[str] | None:
        """The tests to run for a mutant, quickest first; [] if none reaches it; None for the
        whole suites (it runs at import, so any test may see it)."""
        if mutant.import_time:
            return self.by_speed(range(len(self.tests)))
        reached: set[int] = set()
        lines = self.lines.get(mutant.file, {})
        for line in mutant.cover_lines:
            reached.update(lines.get(line, ()))
        if self.IMPORT in reached:
            return self.by_speed(range(len(self.tests)))
        return self.by_speed(reached)

    def to_json(self) -> dict[str, Any]:
        return {
            "tests": self.tests,
            "seconds": self.seconds,
            "lines": {f: {str(n): t for n, t in ls.items()} for f, ls in self.lines.items()},
            "run_seconds": self.run_seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CoverageMap:
        lines = {f: {int(n): t for n, t in ls.items()} for f, ls in data["lines"].items()}
        return cls(data["tests"], data["seconds"], lines, data["run_seconds"], cached=True)


def _fingerprint(root: Path, suites: Sequence[str], target: str) -> str:
    digest = hashlib.sha256()
    profile = test_env().get("HYPOTHESIS_PROFILE")  # the examples the tests run
    digest.update(json.dumps([MAP_FORMAT, list(suites), target, profile]).encode())
    files = [SCRIPTS / "mutate_plugin.py", root / "pyproject.toml"]
    for folder in ("src", "tests"):
        files += sorted(p for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts)
    for path in files:
        if path.exists():
            digest.update(os.path.relpath(path, root).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def test_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every test run: CI's Hypothesis examples without the shrinking of a
    failure (the `mutate` profile of tests/conftest.py: derandomized, so the same examples every
    run), one hash seed (so that set and dict order of strings is the same in every run of a
    mutant), no bytecode written, and no coverage or profile settings leaking in from the
    caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COVERAGE_", "COV_CORE_", "MUTATE_")) and k != "HYPOTHESIS_PROFILE"
    }
    env["CI"] = "true"
    env["HYPOTHESIS_PROFILE"] = "mutate"
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The compiled core (client_proxy.compiled_core) is the unmutated source's: the test that
    # compares it with client_proxy.core skips under a mutant rather than failing (a frozen copy
    # of the original would "kill" every mutant, and say nothing about the tests).
    env["CLIENT_PROXY_MUTATION_RUN"] = "1"
    env.update(extra or {})
    return env


def build_coverage_map(
    root: Path,
    target: str,
    suites: Sequence[str],
    timeout: float,
    import_name: str,
    *,
    use_cache: bool = True,
) -> CoverageMap:
    """Runs the suites once under coverage, with one context per test, and maps each line of
    the target to the tests that ran it. Python subprocesses started by a test are measured as
    that test too (see scripts/mutate_plugin.py)."""
    cache = root / CACHE_DIR / f"coverage-{_fingerprint(root, suites, target)}.json"
    if use_cache and cache.exists():
        return CoverageMap.from_json(json.loads(cache.read_text(encoding="utf-8")))

    from coverage import CoverageData  # noqa: PLC0415 (the dev extra; only the map needs it)

    target_dir = (root / target).resolve()
    with tempfile.TemporaryDirectory(prefix="mutate-coverage-") as tmp:
        work = Path(tmp)
        (work / "main").mkdir()
        (work / "sub").mkdir()
        (work / "main.rc").write_text(f"[run]\ndata_file = {work / 'main' / '.coverage'}\n")
        (work / "sub.rc").write_text(
            "[run]\n"
            f"source = {target_dir}\n"
            f"data_file = {work / 'sub' / '.coverage'}\n"
            "parallel = true\n"
            "context = ${MUTATE_TEST_CONTEXT}|subprocess\n"
        )
        record = work / "tests.json"
        env = test_env(
            {
                "MUTATE_RECORD": str(record),
                "MUTATE_CHILD_RC": str(work / "sub.rc"),
                "MUTATE_IMPORT": import_name,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")])
                ),
            }
        )
        command = [
            sys.executable,
            "-m",
            "pytest",
            *suites,
            "-p",
            "mutate_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--cov={target_dir}",
            f"--cov-config={work / 'main.rc'}",
            "--cov-context=test",
            "--cov-report=",
            f"--timeout={timeout}",
        ]
        print(f"coverage: running {' '.join(suites)} once under coverage ...", flush=True)
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, check=False
        )
        elapsed = time.monotonic() - started
        if done.returncode != 0 or not record.exists():
            sys.stdout.write(done.stdout[-6000:] + done.stderr[-3000:])
            raise SystemExit(
                f"mutate: the suites fail on the unmutated code (exit {done.returncode}); "
                "fix that first"
            )
        recorded = json.loads(record.read_text(encoding="utf-8"))["tests"]
        tests = [t["nodeid"] for t in recorded]
        seconds = [float(t["seconds"]) for t in recorded]
        index = {nodeid: i for i, nodeid in enumerate(tests)}

        lines: dict[str, dict[int, set[int]]] = {}
        data_files = sorted((work / "main").glob(".coverage*")) + sorted(
            (work / "sub").glob(".coverage*")
        )
        for data_file in data_files:
            data = CoverageData(basename=str(data_file))
            data.read()
            for measured in data.measured_files():
                real = Path(os.path.realpath(measured))
                if not real.is_relative_to(root.resolve()):
                    continue
                rel = real.relative_to(root.resolve()).as_posix()
                per_line = lines.setdefault(rel, {})
                for line, contexts in data.contexts_by_lineno(measured).items():
                    hits = per_line.setdefault(line, set())
                    for context in contexts:
                        hits.update(_context_tests(context, index, tests, seconds))
    mapped = CoverageMap(
        tests,
        seconds,
        {f: {n: sorted(t) for n, t in sorted(ls.items())} for f, ls in sorted(lines.items())},
        run_seconds=elapsed,
    )
    cache.parent.mkdir(exist_ok=True)
    for old in cache.parent.glob("coverage-*.json"):
        old.unlink()  # maps of sources that are gone
    cache.write_text(json.dumps(mapped.to_json()), encoding="utf-8")
    return mapped


def _context_tests(
    context: str, index: dict[str, int], tests: list[str], seconds: list[float]
) -> list[int]:
    """A coverage context as test indices: "" (the core's import) is IMPORT; pytest-cov's
    "nodeid|run" (or |setup, |teardown) and the subprocesses' "nodeid|subprocess" are that
    test; "module|collect" (scripts/mutate_plugin.py) is every test of the module."""
    nodeid, _, phase = context.rpartition("|")
    if not nodeid:  # the core's import, or a subprocess started outside any test
        return [CoverageMap.IMPORT]
    if phase == "collect":
        return [i for i, t in enumerate(tests) if t.startswith(f"{nodeid}::")]
    if nodeid not in index:
        index[nodeid] = len(tests)
        tests.append(nodeid)
        seconds.append(0.0)
    return [index[nodeid]]


# --------------------------------------------------------------------------------------------
# Running the tests on a mutant

Status = Literal["killed", "timeout", "survived", "uncovered", "equivalent", "invalid", "error"]
KILLED: frozenset[str] = frozenset({"killed", "timeout"})
SURVIVED: frozenset[str] = frozenset({"survived", "uncovered"})


@dataclasses.dataclass
class Result:
    mutant: Mutant
    index: int  # in the enumeration
    status: Status
    seconds: float = 0.0
    tests_run: int | None = None  # None: the whole suites
    killed_by: str | None = None
    note: str = ""


@dataclasses.dataclass
class Tree:
    """A working tree the mutants are written into: the repository itself, or a copy."""

    root: Path
    env: dict[str, str]
    originals: dict[str, bytes]


class Runner:
    """Runs pytest on mutants, one at a time per tree, and kills what it started on request."""

    def __init__(
        self,
        suites: Sequence[str],
        coverage: CoverageMap | None,
        timeout: float | None,
        hard_timeout: float | None,
        *,
        select: bool = True,
    ) -> None:
        self.suites = list(suites)
        self.coverage = coverage
        self.select = select
        self.timeout = timeout
        self.hard_timeout = hard_timeout
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()

    def kill_all(self) -> None:
        self.stop.set()
        with self._lock:
            for process in self._running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    def _limits(self, tests: list[str] | None) -> tuple[float, float]:
        """The time-outs of one test and of the whole run. By default 10 s + 3x the slowest
        test's time in the coverage run, and 60 s + 3x their total: coverage itself makes a
        run about twice as slow, so a test is stopped at about 6x its usual time."""
        if self.coverage is None:
            known = [90.0] if tests is None else [90.0] * len(tests)  # no times without the map
        else:
            where = {t: i for i, t in enumerate(self.coverage.tests)}
            chosen = self.coverage.tests if tests is None else tests
            known = [self.coverage.seconds[where[t]] for t in chosen if t in where] or [0.0]
        per_test = self.timeout if self.timeout is not None else 10.0 + 3.0 * max(known)
        whole = self.hard_timeout if self.hard_timeout is not None else 60.0 + 3.0 * sum(known)
        return per_test, max(whole, per_test)

    def _pytest(
        self, tree: Tree, args: list[str], tests: list[str] | None
    ) -> tuple[int | None, str]:
        per_test, budget = self._limits(tests)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-v",  # names each test as it starts: the one a time-out stopped is the last named
            "-p",
            "no:cacheprovider",
            f"--timeout={per_test:.0f}",
            # The thread method ends the process on a time-out; the signal method raises in the
            # test, and Hypothesis would then shrink that "failure", slowly.
            "--timeout-method=thread",
            *args,
        ]
        with self._lock:
            if self.stop.is_set():
                return None, "interrupted"
            process = subprocess.Popen(
                command,
                cwd=tree.root,
                env=tree.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed whole on a time-out
            )
            self._running.add(process)
        try:
            out, _ = process.communicate(timeout=budget)
            return process.returncode, out.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, _ = process.communicate()
            return None, out.decode("utf-8", "replace")
        finally:
            with self._lock:
                self._running.discard(process)

    def run(self, tree: Tree, mutant: Mutant, index: int) -> Result:
        try:
            data = mutated_source(tree.originals[mutant.file], mutant)
        except MutationError as error:
            return Result(mutant, index, "invalid", note=str(error))
        tests = self.coverage.select(mutant) if self.select and self.coverage else None
        if tests == []:
            return Result(mutant, index, "uncovered", tests_run=0, note="no test runs this line")
        started = time.monotonic()
        with mutant_in_place(tree.root / mutant.file, data):
            code, out = self._pytest(tree, tests or self.suites, tests)
            if code == 4 and "found no collectors for" in out:
                # A test module the node ids name failed to import: the mutant broke it.
                code = 2
            elif code in (4, 5) and tests is not None:
                # Node ids pytest could not find (renamed tests?): fall back to the suites.
                tests = None
                code, out = self._pytest(tree, self.suites, None)
        seconds = time.monotonic() - started
        count = None if tests is None else len(tests)
        if self.stop.is_set():
            return Result(mutant, index, "error", seconds, count, note="interrupted")
        if code is None:
            return Result(mutant, index, "timeout", seconds, count, note="hard time-out")
        if code == 0:
            return Result(mutant, index, "survived", seconds, count)
        if code in (4, 5):
            return Result(mutant, index, "error", seconds, count, note=_tail(out))
        if (banner := _TIMEOUT_BANNER.search(out)) is not None:
            before = out[: banner.start()].strip().splitlines()
            culprit = before[-1].split()[0] if before and before[-1].split() else None
            return Result(mutant, index, "timeout", seconds, count, culprit, "pytest-timeout")
        culprit = _first_failure(out)
        note = {2: "collection or import error", 3: "pytest internal error"}.get(code, "")
        if code < 0:
            note = f"crashed (signal {-code})"
        return Result(mutant, index, "killed", seconds, count, culprit, note)


_TIMEOUT_BANNER = re.compile(r"\+{3,} Timeout \+{3,}")


def _first_failure(out: str) -> str | None:
    for line in out.splitlines():
        for prefix in ("FAILED ", "ERROR "):
            if line.startswith(prefix):
                return line[len(prefix) :].split(" - ", 1)[0].strip()
    return None


def _tail(out: str, lines: int = 5) -> str:
    return " | ".join(out.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# The trees: in place, or copies


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout


def check_clean(root: Path, target: str) -> None:
    """In place, a run overwrites the target's files: only start on a tree git can restore."""
    try:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=all", "--", target)
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"mutate: cannot ask git whether {target} is clean ({error})") from error
    if dirty.strip():
        raise SystemExit(
            f"mutate: {target} has changes git does not have:\n{dirty}"
            f"Commit or stash them first (a run rewrites these files in place). If an earlier "
            f"run was killed outright, `git checkout -- {target}` restores them; or pass --copy."
        )


def _editable_paths(root: Path) -> list[str]:
    """The entries of a fresh interpreter's sys.path inside the repository (the editable
    install's), relative to it: in a copy, the same entries of the copy must come first."""
    out = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path))"],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        env=test_env(),
    ).stdout
    inside = []
    for entry in json.loads(out):
        path = Path(entry).resolve() if entry else None
        if path and path.is_relative_to(root.resolve()) and path.exists():
            inside.append(path.relative_to(root.resolve()).as_posix())
    return inside


def make_copy(
    root: Path, into: Path, target: str, import_name: str, editable: list[str]
) -> dict[str, str]:
    """Copies what git tracks (and untracked files it does not ignore) to ``into``, symlinks as
    symlinks, and returns the environment under which ``import_name`` (the target's package)
    resolves into the copy: PYTHONPATH holds the copy's directories from which it does."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in sorted(set(filter(None, listed.split("\0")))):
        source, dest = root / rel, into / rel
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), dest)
        elif source.is_file():
            shutil.copy2(source, dest)
    for rel in editable:
        # The editable install's folder of links (build/editable, made at install time and
        # ignored by git) is not among the files git lists: without it the copy's tests would
        # import the package from the repository. Its links are relative, so in the copy they
        # point into the copy.
        source, dest = root / rel, into / rel
        if source.is_dir() and not dest.exists():
            shutil.copytree(source, dest, symlinks=True)
    package = Path(*import_name.split("."))
    candidates = [into / rel for rel in editable] + [into]
    candidates += sorted(p for p in into.iterdir() if p.is_dir() and not p.is_symlink())
    pythonpath = list(
        dict.fromkeys(
            str(c) for c in candidates if (c / package).resolve() == (into / target).resolve()
        )
    )
    if os.environ.get("PYTHONPATH"):
        pythonpath.append(os.environ["PYTHONPATH"])
    env = test_env({"PYTHONPATH": os.pathsep.join(pythonpath)})
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib, os, sys; "
            "print(os.path.realpath(importlib.import_module(sys.argv[1]).__file__))",
            import_name,
        ],
        cwd=into,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    where = probe.stdout.strip()
    if probe.returncode != 0 or not Path(where).is_relative_to(into.resolve()):
        raise SystemExit(
            f"mutate: in a copy of the tree, {import_name} still imports from {where or '?'} "
            f"({probe.stderr.strip()[-300:]}); run without --jobs/--copy"
        )
    return env


# --------------------------------------------------------------------------------------------
# Scoring and reporting


def wilson(killed: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for the default z)."""
    if total == 0:
        return (0.0, 1.0)
    p = killed / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def load_equivalents(path: Path) -> dict[Key, str]:
    """Reads a TOML file of ``[[equivalent]]`` tables: ``file``, ``scope``, ``original``,
    ``mutated`` (as printed for a survivor and in the report), ``reason``, and ``occurrence``
    when the same change appears more than once in one scope (default 0)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    known: dict[Key, str] = {}
    for n, entry in enumerate(data.get("equivalent", [])):
        missing = {"file", "scope", "original", "mutated", "reason"} - set(entry)
        if missing:
            raise SystemExit(f"mutate: {path}: equivalent #{n + 1} lacks {sorted(missing)}")
        key: Key = (
            entry["file"],
            entry["scope"],
            entry["original"],
            entry["mutated"],
            int(entry.get("occurrence", 0)),
        )
        known[key] = str(entry["reason"]).strip()
    return known


def summarise(results: Sequence[Result]) -> dict[str, Any]:
    counts: Counter[str] = Counter(r.status for r in results)
    killed = sum(counts[s] for s in KILLED)
    scored = killed + sum(counts[s] for s in SURVIVED)
    low, high = wilson(killed, scored)
    ran = [r.seconds for r in results if r.status in ("killed", "timeout", "survived", "error")]
    per_operator: dict[str, dict[str, int]] = {}
    for r in results:
        row = per_operator.setdefault(r.mutant.operator, {"killed": 0, "scored": 0})
        if r.status in KILLED or r.status in SURVIVED:
            row["scored"] += 1
            row["killed"] += r.status in KILLED
    return {
        "counts": dict(sorted(counts.items())),
        "killed": killed,
        "scored": scored,
        "score": killed / scored if scored else None,
        "ci95": [low, high],
        "mutants_run": len(ran),
        "seconds_per_mutant_mean": statistics.fmean(ran) if ran else None,
        "seconds_per_mutant_median": statistics.median(ran) if ran else None,
        "seconds_running_mutants": sum(ran),
        "per_operator": dict(sorted(per_operator.items())),
    }


def _result_json(r: Result) -> dict[str, Any]:
    m = r.mutant
    return {
        "id": m.id,
        "index": r.index,
        "file": m.file,
        "line": m.line,
        "scope": m.scope,
        "operator": m.operator,
        "original": m.original,
        "mutated": m.mutated,
        "occurrence": m.occurrence,
        "import_time": m.import_time,
        "status": r.status,
        "seconds": round(r.seconds, 3),
        "tests_run": r.tests_run,
        "killed_by": r.killed_by,
        "note": r.note,
    }


def print_summary(summary: dict[str, Any], results: Sequence[Result], wall: float) -> None:
    counts = summary["counts"]
    print()
    print(
        "killed {k} ({t} by time-out), survived {s} ({u} reached by no test), "
        "equivalent {e}, not run {x}".format(
            k=summary["killed"],
            t=counts.get("timeout", 0),
            s=counts.get("survived", 0) + counts.get("uncovered", 0),
            u=counts.get("uncovered", 0),
            e=counts.get("equivalent", 0),
            x=counts.get("invalid", 0) + counts.get("error", 0),
        )
    )
    if summary["scored"]:
        low, high = summary["ci95"]
        print(
            f"score {summary['killed']}/{summary['scored']} = {100 * summary['score']:.1f}% "
            f"(95% CI {100 * low:.1f}%-{100 * high:.1f}%, Wilson)"
        )
    else:
        print("score: no mutant scored")
    rows = ", ".join(
        f"{op} {row['killed']}/{row['scored']}" for op, row in summary["per_operator"].items()
    )
    print(f"by operator (killed/scored): {rows}")
    if summary["mutants_run"]:
        print(
            f"time: {summary['mutants_run']} mutants run, "
            f"{summary['seconds_running_mutants']:.1f} s of test runs, "
            f"mean {summary['seconds_per_mutant_mean']:.2f} s, "
            f"median {summary['seconds_per_mutant_median']:.2f} s per mutant; {wall:.1f} s in all"
        )
    survivors = [r for r in results if r.status in SURVIVED]
    if survivors:
        print("\nsurvivors:")
        for r in survivors:
            why = "no test runs it" if r.status == "uncovered" else f"{r.tests_run or 'all'} tests"
            print(f"  {r.mutant.describe()}   [{r.mutant.scope}; {r.mutant.operator}; {why}]")
    equivalent = [r for r in results if r.status == "equivalent"]
    if equivalent:
        print("\nequivalent (not scored):")
        for r in equivalent:
            print(f"  {r.mutant.describe()}\n      {r.note}")
    broken = [r for r in results if r.status in ("invalid", "error")]
    if broken:
        print("\nnot run (not scored):")
        for r in broken:
            print(f"  {r.mutant.describe()}   [{r.status}: {r.note}]")


# --------------------------------------------------------------------------------------------
# The command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mutate", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--sample", type=int, default=300, help="mutants to draw (default 300)")
    parser.add_argument("--all", action="store_true", help="every mutant, no sample")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sample (default 1)")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    parser.add_argument("--equivalent", type=Path, help="TOML file of known-equivalent mutants")
    parser.add_argument("--jobs", type=int, default=1, help="workers, each in a copy of the tree")
    parser.add_argument("--copy", action="store_true", help="work in a copy even with one job")
    parser.add_argument(
        "--timeout",
        type=float,
        help="per test, via pytest-timeout (default 10 s + 3x the slowest selected test's time "
        "in the coverage run, itself about twice its usual time)",
    )
    parser.add_argument(
        "--hard-timeout",
        type=float,
        help="per mutant, for the whole pytest run (default 60 s + 3x the selected tests' time "
        "in the coverage run)",
    )
    parser.add_argument(
        "--no-select",
        action="store_true",
        help="run the whole suites on every mutant, not just the tests that reach its line "
        "(to measure what the selection saves)",
    )
    parser.add_argument("--fresh-coverage", action="store_true", help="ignore the cached map")
    parser.add_argument("--only", action="append", default=[], help="glob on the file paths")
    parser.add_argument(
        "--operators", default=",".join(OPERATORS), help=f"comma-separated, of {OPERATORS}"
    )
    parser.add_argument(
        "--index",
        type=int,
        action="append",
        default=[],
        help="run this mutant (its number in --list); repeatable; overrides the sample",
    )
    parser.add_argument("--list", action="store_true", help="list the chosen mutants; run none")
    parser.add_argument("--fail-under", type=float, help="exit 3 if the score (%%) is below")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=argparse.SUPPRESS)
    parser.add_argument("--suite", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--import-name", default=DEFAULT_IMPORT_NAME, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.operators.split(",")) - set(OPERATORS)
    if unknown:
        parser.error(f"unknown operators {sorted(unknown)}; known: {', '.join(OPERATORS)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(root: Path, target: str, in_place: bool) -> Iterator[None]:
    """While a run rewrites the target in place, no other run may start: neither another in
    place, nor one that would copy the tree with a mutant in it. A lock left by a run killed
    outright is dropped if git says the target is clean, and refused otherwise."""
    lock = root / CACHE_DIR / "in-place.pid"
    if lock.exists():
        text = lock.read_text(encoding="utf-8").strip()
        pid = int(text) if text.isdigit() else 0
        if pid and _alive(pid) and pid != os.getpid():
            raise SystemExit(f"mutate: run {pid} is rewriting {target} in place; wait for it")
        if _git(root, "status", "--porcelain", "--", target).strip():
            raise SystemExit(
                f"mutate: run {pid} was killed while rewriting {target} in place, and {target} "
                f"has changes: see `git diff -- {target}` (`git checkout -- {target}` undoes "
                f"a leftover mutant), then delete {lock.relative_to(root)}"
            )
        lock.unlink()
    if not in_place:
        yield
        return
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(str(os.getpid()), encoding="utf-8")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    in_place = not (args.copy or args.jobs > 1 or args.list)
    with run_lock(ROOT, args.target, in_place):
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    started = time.monotonic()
    suites: list[str] = args.suite or list(DEFAULT_SUITES)
    operators = [op for op in OPERATORS if op in args.operators.split(",")]
    copies = args.copy or args.jobs > 1

    everything = enumerate_mutants(ROOT, args.target, operators)
    if args.only:
        everything = [m for m in everything if any(fnmatch.fnmatch(m.file, g) for g in args.only)]
    if args.index:
        chosen = [everything[i] for i in sorted(set(args.index))]
    else:
        chosen = draw(everything, None if args.all else args.sample, args.seed)
    position = {m.key: i for i, m in enumerate(everything)}
    by_operator = Counter(m.operator for m in everything)
    files = len({m.file for m in everything})
    print(
        f"mutants: {len(everything)} in {files} files under {args.target} "
        f"({', '.join(f'{op} {by_operator[op]}' for op in operators)}); "
        + (
            "running all"
            if len(chosen) == len(everything)
            else f"running {len(chosen)} given by --index"
            if args.index
            else f"sample of {len(chosen)}, seed {args.seed}"
        )
    )
    if args.list:
        for m in chosen:
            print(f"{position[m.key]:5d} {m.describe(200)}   [{m.scope}; {m.operator}]")
        return 0

    equivalents = load_equivalents(args.equivalent) if args.equivalent else {}
    stale = set(equivalents) - {m.key for m in everything}
    for key in sorted(stale):
        print(f"warning: equivalent entry matches no mutant (code changed?): {key}")

    if not copies:
        check_clean(ROOT, args.target)
    for cache in (ROOT / args.target).rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)

    # Built with --no-select too: the tests' times set the time-outs either way.
    coverage = build_coverage_map(
        ROOT,
        args.target,
        suites,
        max(args.timeout or 0.0, 600.0),
        args.import_name,
        use_cache=not args.fresh_coverage,
    )
    covered = sum(len(v) for v in coverage.lines.values())
    print(
        f"coverage: {len(coverage.tests)} tests; {covered} lines run in "
        f"{len(coverage.lines)} files "
        + ("(cached)" if coverage.cached else f"in {coverage.run_seconds:.1f} s")
    )

    results: list[Result] = []
    pending: queue.Queue[tuple[int, Mutant]] = queue.Queue()
    for m in chosen:
        if m.key in equivalents:
            results.append(Result(m, position[m.key], "equivalent", note=equivalents[m.key]))
        else:
            pending.put((position[m.key], m))
    total = pending.qsize()

    originals = {
        p.relative_to(ROOT).as_posix(): p.read_bytes() for p in target_files(ROOT, args.target)
    }
    runner = Runner(suites, coverage, args.timeout, args.hard_timeout, select=not args.no_select)
    scratch = Path(tempfile.mkdtemp(prefix="mutate-trees-")) if copies else None
    trees: list[Tree] = []
    print_lock = threading.Lock()
    done_count = [0]

    def work(tree: Tree, finished: threading.Event) -> None:
        try:
            while not runner.stop.is_set():
                try:
                    index, mutant = pending.get_nowait()
                except queue.Empty:
                    return
                run_one(tree, index, mutant)
        finally:
            finished.set()

    def run_one(tree: Tree, index: int, mutant: Mutant) -> None:
        result = runner.run(tree, mutant, index)
        if result.note == "interrupted":
            return
        with print_lock:
            results.append(result)
            done_count[0] += 1
            ran = "all" if result.tests_run is None else str(result.tests_run)
            print(
                f"[{done_count[0]:{len(str(total))}d}/{total}] {result.status:9s} "
                f"{result.seconds:6.1f}s {ran:>4s} tests  {mutant.describe(60)}",
                flush=True,
            )

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    interrupted = False
    finished: list[threading.Event] = []
    try:
        if scratch is None:
            trees = [Tree(ROOT, test_env(), originals)]
        else:
            editable = _editable_paths(ROOT)
            for n in range(args.jobs):
                into = scratch / f"tree{n}"
                env = make_copy(ROOT, into, args.target, args.import_name, editable)
                copied = {f: (into / f).read_bytes() for f in originals}
                trees.append(Tree(into, env, copied))
        # Waited for through events: a join that Ctrl-C interrupts can report a live thread as
        # finished (Python 3.11), and the files must not be checked before the workers are done.
        finished += [threading.Event() for _ in trees]
        for n, tree in enumerate(trees):
            threading.Thread(target=work, args=(tree, finished[n]), name=f"mutate-{n}").start()
        while not all(f.is_set() for f in finished):
            for f in finished:
                f.wait(timeout=0.2)
    except KeyboardInterrupt:
        interrupted = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nmutate: interrupted; stopping the tests and restoring the files ...", flush=True)
        runner.kill_all()
        for f in finished:
            f.wait()
    finally:
        for tree in trees:  # belt and braces: every file as it was
            for rel, data in tree.originals.items():
                path = tree.root / rel
                if path.read_bytes() != data:
                    path.write_bytes(data)
                    print(f"mutate: restored {path}")
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        if interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    results.sort(key=lambda r: r.index)
    wall = time.monotonic() - started
    summary = summarise(results)
    print_summary(summary, results, wall)
    if not copies:
        left = _git(ROOT, "status", "--porcelain", "--untracked-files=all", "--", args.target)
        print(
            f"\n{args.target} after the run: "
            + ("clean" if not left.strip() else f"CHANGED\n{left}")
        )
    if args.report:
        report = {
            "command": " ".join(
                [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
            ),
            "commit": _git(ROOT, "rev-parse", "HEAD").strip(),
            "dirty": bool(_git(ROOT, "status", "--porcelain", "--", args.target).strip()),
            "target": args.target,
            "suites": suites,
            "seed": args.seed,
            "sample": None if args.all else args.sample,
            "mutants_total": len(everything),
            "mutants_chosen": len(chosen),
            "selection": "all tests" if args.no_select else "coverage",
            "coverage_run_seconds": coverage.run_seconds,
            "coverage_cached": coverage.cached,
            "jobs": len(trees),
            "interrupted": interrupted,
            "wall_seconds": round(wall, 1),
            "summary": summary,
            "results": [_result_json(r) for r in results],
        }
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report: {args.report}")
    if interrupted:
        return 130
    below = summary["score"] is not None and 100 * summary["score"] < (args.fail_under or 0)
    return 3 if below else 0


if __name__ == "__main__":
    sys.exit(main())
