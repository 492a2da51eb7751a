"""Choosing a resource: which ones may take a request (:func:`candidates`), which one does
(:func:`choose`, by the configured strategy), and which ones leave the rotation for a while
after failing in a row (:func:`track_failures`).

The strategies: `random` (mod_client_proxy's), `round-robin`, `least-outstanding` (ties broken
at random), `priority` (the highest presence priority, ties at random) and `sticky` (rendezvous
hashing on the requester's bare JID, :func:`rendezvous`).

SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014):
one 64-bit integer of state, a pure step function, good enough statistics for load spreading.
Carrying the integer in the state (rather than a `random.Random` object) keeps the state a value:
the same seed and the same events always give the same choices.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from ._jid import bare
from ._state import Step, TargetResource

__all__ = [
    "candidates",
    "choose",
    "next_random",
    "pick",
    "rendezvous",
    "rendezvous_score",
    "track_failures",
]

T = TypeVar("T")

_MASK = (1 << 64) - 1


def next_random(seed: int) -> tuple[int, int]:
    """``(value, next_seed)``: a 64-bit pseudo-random value and the generator's next state."""
    seed = (seed + 0x9E3779B97F4A7C15) & _MASK
    z = seed
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31), seed


def pick(candidates: tuple[T, ...], seed: int) -> tuple[T, int]:
    """One of ``candidates`` (non-empty, in a fixed order), uniformly, and the next seed."""
    value, seed = next_random(seed)
    return candidates[value % len(candidates)], seed


def rendezvous_score(key: str, name: str) -> int:
    """Highest-random-weight (rendezvous) hashing score of resource ``name`` for ``key``
    (Thaler and Ravishankar, 1998). The same key always prefers the same resource while it is
    online, and a resource leaving moves only the keys that preferred it."""
    data = f"{key}\0{name}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def rendezvous(candidates: tuple[TargetResource, ...], key: str) -> TargetResource:
    """The candidate with the highest rendezvous score for ``key`` (ties: the first by name)."""
    best = candidates[0]
    best_score = rendezvous_score(key, best.name)
    for r in candidates[1:]:
        score = rendezvous_score(key, r.name)
        if score > best_score:
            best, best_score = r, score
    return best


def candidates(w: Step) -> tuple[TargetResource, ...]:
    """The resources a request may go to: eligible ones not cooling down; if every eligible one
    is cooling down, all of them rather than none."""
    resources = w.session.resources
    now = w.now
    for r in resources:
        if not r.eligible or r.cooling_until > now:
            break
    else:
        return resources  # the usual case: all are ready, and no tuple is built
    ready = tuple(r for r in resources if r.eligible and r.cooling_until <= now)
    return ready or tuple(r for r in resources if r.eligible)


def choose(w: Step, candidates: tuple[TargetResource, ...], requester: str) -> str:
    """The configured strategy's pick among ``candidates`` (non-empty, sorted by name)."""
    strategy = w.config.routing
    if strategy == "random" or len(candidates) == 1:
        value, w.rng = next_random(w.rng)
        return candidates[value % len(candidates)].name
    if strategy == "round-robin":
        turn = w.turn
        w.turn = turn + 1
        return candidates[turn % len(candidates)].name
    if strategy == "least-outstanding":
        load = w.load
        loads = [load.get(r.name, 0) for r in candidates]
        least = min(loads)
        tied = tuple(r for r, n in zip(candidates, loads, strict=True) if n == least)
        chosen, w.rng = pick(tied, w.rng)
    elif strategy == "priority":
        top = max(r.priority for r in candidates)
        chosen, w.rng = pick(tuple(r for r in candidates if r.priority == top), w.rng)
    else:  # sticky
        chosen = rendezvous(candidates, bare(requester))
    return chosen.name


def track_failures(w: Step, name: str, failed: bool) -> None:
    """Count a resource's failing answers in a row (`feature-not-implemented`,
    `service-unavailable`); at ``failure_threshold`` take it out of rotation for
    ``failure_cooldown`` seconds. Any other answer resets the count."""
    resources = w.session.resources
    for r in resources:
        if r.name == name:
            break
    else:
        return
    if not failed and not r.failures:
        return  # the usual answer: nothing to count, nothing to reset
    cfg = w.config
    i = resources.index(r)
    if not failed:
        fresh = (*resources[:i], r._replace(failures=0), *resources[i + 1 :])
        w.session = w.session._replace(resources=fresh)
        return
    if r.cooling_until > w.now:
        return  # already out of rotation: answers to requests it had before do not extend it
    failures = r.failures + 1
    cooling_until = r.cooling_until
    if cfg.failure_threshold and failures >= cfg.failure_threshold:
        failures = 0
        cooling_until = w.now + cfg.failure_cooldown
        w.count("resource.cooldown")
        w.log(
            "warning",
            "resource.cooldown",
            f"{cfg.target}/{name} answered {cfg.failure_threshold} requests in a row with "
            f"an error that says it cannot serve them; out of rotation for "
            f"{cfg.failure_cooldown:g} s or until it sends new presence",
        )
    fresh = (
        *resources[:i],
        r._replace(failures=failures, cooling_until=cooling_until),
        *resources[i + 1 :],
    )
    w.session = w.session._replace(resources=fresh)
