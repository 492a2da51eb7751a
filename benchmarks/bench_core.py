"""`just bench-core`: the pure core alone, with no I/O.

For 10, 1,000 and 100,000 requests already outstanding, it measures:

- proxied requests per second: a request step, then its reply step (built from the forwarded
  stanza, as a transport would), with the backlog left in place so each step sees that many
  outstanding requests; best of several rounds, since these machines are shared;
- bytes per outstanding request: memory allocated (tracemalloc) by the state as the backlog is
  built, divided by its size. Each request has its own id, requester string and stanza, as on
  the wire.

Targets (issue 2): at least 100,000 req/s at 10 outstanding, at most 1.5x slower at 100,000,
under 1 KiB per outstanding request.
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
import tracemalloc

from client_proxy.core import (
    ConnectionUp,
    ProxyConfig,
    ProxyState,
    Stanza,
    StanzaReceived,
    initial_state,
    step,
)

PROXY = "proxy.example.org"
TARGET = "svc@example.org"
BACKLOGS = (10, 1_000, 100_000)


def _ready_state(limit: int) -> ProxyState:
    cfg = ProxyConfig(PROXY, TARGET, max_outstanding=limit, max_per_requester=limit)
    state = step(initial_state(cfg, seed=7), ConnectionUp(0.0)).state
    for resource in ("a", "b"):
        presence = Stanza("presence", None, None, f"{TARGET}/{resource}", PROXY)
        state = step(state, StanzaReceived(0.0, presence)).state
    return state


def _with_backlog(state: ProxyState, n: int) -> ProxyState:
    for i in range(n):
        request = Stanza("iq", "get", f"backlog-{i}", f"user{i % 1000}@example.org/res", PROXY)
        state = step(state, StanzaReceived(1.0, request)).state
    return state


def _proxied_per_second(state: ProxyState, n: int) -> tuple[float, int]:
    requests = [
        StanzaReceived(1.0, Stanza("iq", "get", f"q{i}", "alice@example.org/phone", PROXY))
        for i in range(n)
    ]
    gc.collect()
    started = time.perf_counter()
    for event in requests:
        transition = step(state, event)
        forwarded = transition.outputs[0].stanza  # type: ignore[union-attr]
        reply = Stanza("iq", "result", forwarded.id, forwarded.to, forwarded.from_)
        state = step(transition.state, StanzaReceived(1.0, reply)).state
    elapsed = time.perf_counter() - started
    return n / elapsed, len(state.requests)


def _bytes_per_outstanding(n: int) -> float:
    base = _ready_state(max(n, 1))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = _with_backlog(base, n)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(state.requests) == n
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000, help="proxied per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per backlog; best kept")
    args = parser.parse_args()

    print(f"client-proxy core benchmark: Python {platform.python_version()}, {platform.machine()}")
    print(f"{'outstanding':>12} {'proxied req/s':>14} {'bytes/outstanding':>18}")
    rates: dict[int, float] = {}
    for backlog in BACKLOGS:
        state = _with_backlog(_ready_state(backlog + 10), backlog)
        assert len(state.requests) == backlog
        best = 0.0
        for _ in range(args.rounds):
            rate, left = _proxied_per_second(state, args.requests)
            # Every request was answered, and the backlog is untouched.
            assert left == backlog, (left, backlog)
            best = max(best, rate)
        rates[backlog] = best
        per_request = _bytes_per_outstanding(backlog)
        print(f"{backlog:>12,} {rates[backlog]:>14,.0f} {per_request:>18,.0f}")
    slowdown = rates[BACKLOGS[0]] / rates[BACKLOGS[-1]]
    print(f"slowdown from {BACKLOGS[0]:,} to {BACKLOGS[-1]:,} outstanding: {slowdown:.2f}x")


if __name__ == "__main__":
    main()
