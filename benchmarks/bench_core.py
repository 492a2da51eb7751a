"""`just bench-core`: the core alone, with no I/O: client_proxy.core, or with `--core compiled`
the copy mypyc compiled (client_proxy.compiled_core, which the daemon runs).

For 10, 1,000 and 100,000 requests already outstanding, it measures:

- proxied requests per second: a request step, then its reply step, with the backlog left in
  place so each step sees that many outstanding requests; best of several rounds, since these
  machines are shared. Two figures: the core's steps alone (the reply events prepared before
  the clock starts), and the same with each reply event built from the forwarded stanza inside
  the timed loop, as a transport would;
- bytes per outstanding request: memory allocated (tracemalloc) by the state as the backlog is
  built, divided by its size. Each request has its own id, requester string and stanza, as on
  the wire.

The requests and replies measured are the ordinary ones (the core has one path for every
stanza; refusals, errors, presence and the rest are not measured here).

Each timed round starts from a private copy of the backlog state. A running proxy keeps only its
latest state, so the map nodes a step replaces are freed at once. Were the benchmark to keep its
starting state alive across rounds, every node a step copies would outlive the step, and
Python's cyclic garbage collector would keep walking them: at 100,000 outstanding that artefact
alone costs about 15% (measured with this script before the copy was made).

Targets: at least 100,000 req/s at 10 outstanding, at most 1.5x slower at 100,000, under 1 KiB
per outstanding request.
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
    Transition,
    initial_state,
    step,
)
from immutables import Map

#: What this module takes from the core, rebound for --core compiled.
_CORE_NAMES = (
    "ConnectionUp",
    "ProxyConfig",
    "ProxyState",
    "Stanza",
    "StanzaReceived",
    "Transition",
    "initial_state",
    "step",
)
PROXY = "proxy.example.org"
TARGET = "svc@example.org"
BACKLOGS = (10, 1_000, 100_000)


def _ready_state(limit: int) -> ProxyState:
    cfg = ProxyConfig(PROXY, TARGET, max_outstanding=limit, max_per_requester=limit)
    state = step(initial_state(cfg, seed=7), ConnectionUp(0.0)).state
    # The target has approved the subscription, and two resources are online.
    for sender, kind in ((TARGET, "subscribed"), (f"{TARGET}/a", None), (f"{TARGET}/b", None)):
        presence = Stanza("presence", kind, None, sender, PROXY)
        state = step(state, StanzaReceived(0.0, presence)).state
    return state


def _private_copy(state: ProxyState) -> ProxyState:
    """An equal state that shares no map node with ``state`` (see the module docstring)."""
    return state._replace(
        **{
            name: Map(value.items())
            for name, value in zip(state._fields, state, strict=True)
            if isinstance(value, Map)
        }
    )


def _with_backlog(state: ProxyState, n: int) -> ProxyState:
    for i in range(n):
        request = Stanza("iq", "get", f"backlog-{i}", f"user{i % 1000}@example.org/res", PROXY)
        state = step(state, StanzaReceived(1.0, request)).state
    return state


def _requests(n: int) -> list[StanzaReceived]:
    return [
        # 1,000 requesters, so that the default per-requester rate limit is exercised (each
        # sends well within its burst) rather than switched off.
        StanzaReceived(
            1.0, Stanza("iq", "get", f"q{i}", f"user{i % 1000}@example.org/phone", PROXY)
        )
        for i in range(n)
    ]


def _reply_to(transition: Transition) -> StanzaReceived:
    """What the target resource answers to the forwarded request (built as a transport would)."""
    forwarded = transition.outputs[0].stanza  # type: ignore[union-attr]
    return StanzaReceived(1.0, Stanza("iq", "result", forwarded.id, forwarded.to, forwarded.from_))


def _with_transport_work(state: ProxyState, requests: list[StanzaReceived]) -> tuple[float, int]:
    """Requests per second, building each reply event from the forwarded stanza in the loop."""
    state = _private_copy(state)
    gc.collect()
    started = time.perf_counter()
    for event in requests:
        transition = step(state, event)
        state = step(transition.state, _reply_to(transition)).state
    elapsed = time.perf_counter() - started
    return len(requests) / elapsed, len(state.requests)


def _core_steps_only(state: ProxyState, requests: list[StanzaReceived]) -> tuple[float, int]:
    """Requests per second counting only the core's two steps: the replies are built first, in
    a dry run (the core is deterministic, so the timed run forwards every request to the same
    resource and each prepared reply matches; if one did not, its request would stay
    outstanding and the caller's check of the backlog would fail)."""
    replies = []
    dry = state
    for event in requests:
        transition = step(dry, event)
        replies.append(_reply_to(transition))
        dry = step(transition.state, replies[-1]).state
    del dry, transition
    pairs = list(zip(requests, replies, strict=True))
    state = _private_copy(state)
    gc.collect()
    started = time.perf_counter()
    for request, reply in pairs:
        state = step(step(state, request).state, reply).state
    elapsed = time.perf_counter() - started
    return len(requests) / elapsed, len(state.requests)


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
    parser.add_argument(
        "--core",
        choices=("python", "compiled"),
        default="python",
        help="client_proxy.core, or the compiled copy the daemon runs (default: python)",
    )
    args = parser.parse_args()
    if args.core == "compiled":
        from client_proxy.shell.corelib import CoreUnavailable, choose  # noqa: PLC0415

        try:
            core, _ = choose("compiled")
        except CoreUnavailable as exc:
            parser.exit(2, f"bench-core: {exc}\n")
        # This module's functions find the core's names among its globals.
        globals().update({name: getattr(core, name) for name in _CORE_NAMES})

    print(
        f"client-proxy core benchmark ({args.core} core): Python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    print(
        f"{'outstanding':>12} {'core steps req/s':>17} {'with reply building':>20} "
        f"{'bytes/outstanding':>18}"
    )
    rates: dict[int, float] = {}
    for backlog in BACKLOGS:
        state = _with_backlog(_ready_state(backlog + 10), backlog)
        requests = _requests(args.requests)
        best = {_core_steps_only: 0.0, _with_transport_work: 0.0}
        for _ in range(args.rounds):
            for measure, so_far in list(best.items()):
                rate, left = measure(state, requests)
                # Every request was answered, and the backlog is untouched.
                assert left == backlog, (measure.__name__, left, backlog)
                best[measure] = max(so_far, rate)
        rates[backlog] = best[_core_steps_only]
        per_request = _bytes_per_outstanding(backlog)
        print(
            f"{backlog:>12,} {best[_core_steps_only]:>17,.0f} "
            f"{best[_with_transport_work]:>20,.0f} {per_request:>18,.0f}"
        )
    slowdown = rates[BACKLOGS[0]] / rates[BACKLOGS[-1]]
    print(
        f"slowdown of the core steps from {BACKLOGS[0]:,} to {BACKLOGS[-1]:,} outstanding: "
        f"{slowdown:.2f}x"
    )


if __name__ == "__main__":
    main()
