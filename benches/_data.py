"""Deterministic benchmark data, shared by every benchmark file.

The same seed gives the same bytes on every machine and run, so a ratio between pylog and
a peer is always measured on identical input.
"""

import random

SEED = 20261126


def values(n: int, size: int = 100, seed: int = SEED) -> list[bytes]:
    """``n`` pseudo-random (incompressible) values of ``size`` bytes."""
    r = random.Random(seed)
    return [r.randbytes(size) for _ in range(n)]


def keys(n: int, cardinality: int = 1000, seed: int = SEED + 1) -> list[bytes]:
    """``n`` keys drawn from ``cardinality`` distinct ``b"key-%d"`` strings."""
    r = random.Random(seed)
    return [b"key-%d" % r.randrange(cardinality) for _ in range(n)]


def timestamps(n: int, start_ms: int = 1_700_000_000_000) -> list[int]:
    """``n`` increasing millisecond timestamps, one per millisecond."""
    return list(range(start_ms, start_ms + n))
