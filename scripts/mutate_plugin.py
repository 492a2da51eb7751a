"""The pytest plugin behind the coverage run of ``scripts/mutate.py`` (loaded with ``-p``).

It does three things that pytest-cov does not:

- names the running test in ``MUTATE_TEST_CONTEXT`` and points ``COVERAGE_PROCESS_START`` at a
  coverage config whose static context is that variable, so that a Python subprocess a test
  starts records the lines it runs under that test's node id too;
- measures the collection of each test module under the context ``<module>|collect``, having
  imported the target package (``MUTATE_IMPORT``) beforehand, outside any context: a line
  that runs while a test module is imported or parametrized (a config built at module level)
  then points at that module's tests, and only code that runs when the core itself is
  imported is left with the empty context (every test depends on it);
- writes each test's node id, outcome and duration to the JSON file ``MUTATE_RECORD`` names:
  the mutant runs put the quickest covering test first.

Nothing happens unless ``MUTATE_RECORD`` is set, so the plugin is inert anywhere else.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Generator
from pathlib import Path

import coverage
import pytest

_order: list[str] = []
_seconds: dict[str, float] = {}
_failed: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    child_rc = os.environ.get("MUTATE_CHILD_RC")
    if child_rc and os.environ.get("MUTATE_RECORD"):
        # Read by the .pth file coverage installs, in every Python started from here on.
        os.environ["COVERAGE_PROCESS_START"] = child_rc
    target = os.environ.get("MUTATE_IMPORT")
    if target and os.environ.get("MUTATE_RECORD"):
        importlib.import_module(target)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, object, object]:
    module = collector.getparent(pytest.Module)
    measured = coverage.Coverage.current() if os.environ.get("MUTATE_RECORD") else None
    if module is None or measured is None:
        return (yield)
    measured.switch_context(f"{module.nodeid}|collect")
    try:
        return (yield)
    finally:
        measured.switch_context("")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    os.environ["MUTATE_TEST_CONTEXT"] = item.nodeid
    try:
        return (yield)
    finally:
        os.environ.pop("MUTATE_TEST_CONTEXT", None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _seconds:
        _order.append(report.nodeid)
        _seconds[report.nodeid] = 0.0
    _seconds[report.nodeid] += report.duration
    if report.failed:
        _failed.add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    record = os.environ.get("MUTATE_RECORD")
    if not record:
        return
    tests = [{"nodeid": n, "seconds": _seconds[n], "failed": n in _failed} for n in _order]
    Path(record).write_text(json.dumps({"tests": tests}), encoding="utf-8")
