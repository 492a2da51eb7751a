"""Choosing a resource: the pseudo-random generator, and the rendezvous hash for `sticky`.

The strategies themselves (random, round-robin, least-outstanding, priority, sticky) are applied
in ``_machine`` (``_Step.choose``), which holds the state they read.

SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014):
one 64-bit integer of state, a pure step function, good enough statistics for load spreading.
Carrying the integer in the state (rather than a `random.Random` object) keeps the state a value:
the same seed and the same events always give the same choices.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

__all__ = ["next_random", "pick", "rendezvous_score"]

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
