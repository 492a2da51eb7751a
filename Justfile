# client-proxy's tasks. On a fresh machine run them through ./just, which installs what they need.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv/bin"
export PATH := venv + ":" + env_var("PATH")

# List the recipes.
default:
    @just --list

# Everything CI runs: lint, types, unit, property (ci profile under CI) and integration tests.
test: lint typecheck
    python -m pytest tests

# The property tests with the long Hypothesis profile (thousands of examples each).
test-long:
    HYPOTHESIS_PROFILE=long python -m pytest tests/property -x

# ruff on everything.
lint:
    ruff check src tests benchmarks examples scripts
    ruff format --check src tests benchmarks examples scripts

# mypy --strict on the core, the simulation and the conformance kit; and on the mutation tester.
typecheck:
    mypy
    mypy scripts/mutate.py scripts/mutate_plugin.py

# Mutation testing of src/core (docs/mutation-testing.md): a sample of 300 mutants, seed 1.
# ARGS go to scripts/mutate.py and win over these: `just mutate --all --jobs 2`, `--list`.
mutate *ARGS:
    python scripts/mutate.py --seed 1 --sample 300 --equivalent docs/mutation-equivalents.toml \
        --report .mutate-cache/report.json {{ARGS}}

# Five mutants end to end (the first run also builds the coverage map: about two minutes).
mutate-smoke *ARGS:
    python scripts/mutate.py --seed 1 --sample 5 --report .mutate-cache/smoke.json {{ARGS}}

# Requests per second and bytes per outstanding request through the core alone.
bench-core:
    python -m benchmarks.bench_core

# The main job: a throwaway Prosody on loopback, the proxy, a two-resource service and a user.
demo:
    python examples/demo.py

# One request through the proxy in a simulated deployment, no XMPP server: the four stanzas.
sim:
    python -m client_proxy.sim

# Against a real Prosody, direct vs through the proxy at 1/10/100 in flight: docs/benchmarks.md.
bench *ARGS:
    python -c 'import matplotlib' 2>/dev/null || python -m pip install -q --disable-pip-version-check -e '.[dev,bench]' || echo "bench: could not install the bench extra; no plot"
    python -m benchmarks.bench {{ARGS}}

# Load under resource churn and a proxy restart for SECONDS (default 300); fails on a lost request.
soak SECONDS=env_var_or_default("SOAK_SECONDS", "300") *ARGS:
    python -m benchmarks.soak --duration {{SECONDS}} {{ARGS}}
