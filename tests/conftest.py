"""Hypothesis profiles: `dev` (default, fast), `ci` (derandomized; chosen when CI is set),
`mutate` (`ci` without shrinking: `just mutate` runs the tests hundreds of times, see
docs/mutation-testing.md) and `long` (`just test-long`). HYPOTHESIS_PROFILE overrides the choice.

A derandomized profile must give the same examples whatever else runs in the process. Hypothesis
does not, by itself: now and then it draws a constant from the source of the project's modules
that are imported at the time (``hypothesis.internal.conjecture.providers``: the *local
constants*). Which modules those are depends on the tests that ran before (a test of the shell
imports the shell), and the constants change with the code under test (a mutant that changes a
number or empties a string changes the pool). So the examples a derandomized test sees, and
whether it fails, depended on what ran before it and on unrelated edits: the stateful machine
explored other paths alone than in the whole suite. Under a derandomized profile the pool is
empty (Hypothesis's own built-in constants stay); the random profiles keep it, as a source of
boundary values.
"""

import os

# Which core the shell runs (client_proxy.shell.corelib). In this process, client_proxy.core: the
# shell's unit tests hand the shell values they build from it. The daemons the integration tests
# start run what users run: the compiled core, required under CI (bootstrap builds it), else the
# compiled core if it is built and current (`auto`). CLIENT_PROXY_CORE set by hand chooses for
# the daemons (`python` to test the pure core end to end).
# (tests/integration/proxy_daemon.py reads the daemons' choice from CLIENT_PROXY_DAEMON_CORE.)
os.environ.setdefault(
    "CLIENT_PROXY_DAEMON_CORE",
    os.environ.get("CLIENT_PROXY_CORE") or ("compiled" if os.environ.get("CI") else "auto"),
)
os.environ["CLIENT_PROXY_CORE"] = "python"

from types import ModuleType

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.internal.conjecture import providers

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# The mutation tester's (scripts/mutate.py sets it): the `ci` profile's examples, so the same
# verdicts, without shrinking or explaining a failure: nobody reads a mutant's counterexample,
# and shrinking one took up to a minute per mutant.
settings.register_profile(
    "mutate",
    parent=settings.get_profile("ci"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
    print_blob=False,
)
settings.register_profile(
    "long",
    max_examples=5_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

if settings().derandomize:
    _NO_LOCAL_CONSTANTS = providers.Constants()

    def _no_local_constants() -> providers.Constants:
        return _NO_LOCAL_CONSTANTS

    # tests/unit/test_hypothesis_setup.py fails if Hypothesis stops reading this name.
    providers._get_local_constants = _no_local_constants


@pytest.fixture(scope="session")
def compiled_core() -> ModuleType:
    """client_proxy.compiled_core, the core the daemon runs, if it is built from this source.
    Skips where it is not; fails under CI (bootstrap builds it), except under a mutant
    (scripts/mutate.py), where the copy is of the unmutated source: comparing with it would
    "kill" every mutant and say nothing of the tests."""
    from client_proxy.shell import corelib  # noqa: PLC0415  # after CLIENT_PROXY_CORE is set

    compiled, why = corelib._compiled()
    if compiled is None:
        if os.environ.get("CI") and not os.environ.get("CLIENT_PROXY_MUTATION_RUN"):
            pytest.fail(f"CI runs the compiled core, and it cannot be had: {why}")
        pytest.skip(why)
    return compiled
