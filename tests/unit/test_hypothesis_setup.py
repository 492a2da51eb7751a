"""tests/conftest.py's promise: under a derandomized profile the examples do not depend on what
else the process has imported (Hypothesis's pool of constants read from the project's modules
is empty); the random profiles keep the pool. Fails if a Hypothesis release stops reading the
pool through the name conftest replaces, so that the promise cannot silently lapse."""

from __future__ import annotations

import inspect

from hypothesis import settings
from hypothesis.internal.conjecture import providers


def test_the_provider_reads_local_constants_through_the_replaced_name() -> None:
    assert "_get_local_constants()" in inspect.getsource(providers.HypothesisProvider)


def test_only_a_derandomized_profile_draws_no_constant_from_the_projects_source() -> None:
    import client_proxy.core  # noqa: F401, PLC0415 (a local module with constants, imported)

    replaced = providers._get_local_constants.__module__ != providers.__name__
    assert replaced == settings().derandomize
    if replaced:
        pool = providers._get_local_constants()
        assert not (pool.integers or pool.floats or pool.strings or pool.bytes)
