# client-proxy's tasks. Each recipe that needs the virtualenv first runs `setup`, which installs
# what is missing (scripts/bootstrap), so `just test` works from a fresh clone with any `just` on
# the PATH. ./just does the same with the virtualenv's own `just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv/bin"
export PATH := venv + ":" + env_var("PATH")

# List the recipes.
default:
    @just --list

# scripts/bootstrap: prosody, ejabberd, .venv with client-proxy and its dev tools, the compiled
# core. Nothing to do takes about 0.1 s; skipped when ./just has just run it for this checkout.
[private]
setup:
    @[ "${CLIENT_PROXY_BOOTSTRAPPED:-}" = "{{justfile_directory()}}" ] || "{{justfile_directory()}}/scripts/bootstrap"

# Everything CI runs: lint, types, unit, property (ci profile under CI) and integration tests.
test: setup lint typecheck
    python -m pytest tests

# The property tests with the long Hypothesis profile (thousands of examples each).
test-long: setup
    HYPOTHESIS_PROFILE=long python -m pytest tests/property -x

# ruff on everything.
lint: setup
    ruff check src tests benchmarks examples scripts hatch_build.py
    ruff format --check src tests benchmarks examples scripts hatch_build.py

# mypy --strict on the core, the simulation and the conformance kit; and on the mutation tester.
typecheck: setup
    mypy
    mypy scripts/mutate.py scripts/mutate_plugin.py

# Mutation testing of src/core (docs/mutation-testing.md): a sample of 300 mutants, seed 1.
# ARGS go to scripts/mutate.py and win over these: `just mutate --all --jobs 2`, `--list`.
mutate *ARGS: setup
    python scripts/mutate.py --seed 1 --sample 300 --equivalent docs/mutation-equivalents.toml \
        --report .mutate-cache/report.json {{ARGS}}

# Five mutants end to end (the first run also builds the coverage map: about two minutes).
mutate-smoke *ARGS: setup
    python scripts/mutate.py --seed 1 --sample 5 --report .mutate-cache/smoke.json {{ARGS}}

# Requests per second and bytes per outstanding request through the core alone.
bench-core: setup
    python -m benchmarks.bench_core

# The main job: a throwaway Prosody on loopback, the proxy, a two-resource service and a user.
demo: setup
    python examples/demo.py

# One request through the proxy in a simulated deployment, no XMPP server: the four stanzas.
# ARGS: `--server ejabberd` (ejabberd's rules instead of Prosody's), `--all` (every stanza).
sim *ARGS: setup
    python -m client_proxy.sim {{ARGS}}

# Against a real Prosody, direct vs through the proxy at 1/10/100 in flight: docs/benchmarks.md.
bench *ARGS: setup
    python -c 'import matplotlib' 2>/dev/null || python -m pip install -q --disable-pip-version-check -e '.[dev,bench]' || echo "bench: could not install the bench extra; no plot"
    python -m benchmarks.bench {{ARGS}}

# Hostile loads against a real Prosody (about 3 minutes): requests sent, answered by result and
# by error, never answered (fails unless 0), the proxy's peak memory. --write updates
# docs/benchmarks.md; --loads picks some of headline,churn,fresh,resources.
abuse *ARGS: setup
    python -m benchmarks.abuse {{ARGS}}

# Load under resource churn and a proxy restart for SECONDS (default 300); fails on a lost request.
# --kill: a standby beside the proxy, SIGKILL instead of the restart (--kills N, default 3), and
# the requests counted by cause (answered, bounced in the gap, lost with the killed instance).
soak SECONDS=env_var_or_default("SOAK_SECONDS", "300") *ARGS: setup
    python -m benchmarks.soak --duration {{SECONDS}} {{ARGS}}
