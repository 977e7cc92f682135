"""The seed a synthesis uses: the one asked for, or a random one (F5-TTS's ``-1``), drawn in one place."""

from __future__ import annotations

import math
import numbers
import random

SEED_RANGE = 2**31  # random seeds are drawn from 0..SEED_RANGE-1, as F5-TTS's
SEED_MAX = 2**63 - 1  # the largest seed one may ask for (seed + k for the pieces still fits torch's generator)


def choose_seed(seed: int | None = None) -> int:
    """``seed`` itself, or a random one for ``None`` and negative values (``-1``: "random", as in F5-TTS).

    Raises:
        ValueError: A seed that is not a whole number (``3.7`` is not read as 3), or one above :data:`SEED_MAX`.
    """
    if seed is None:
        return random.randrange(SEED_RANGE)
    whole = isinstance(seed, numbers.Real) and not isinstance(seed, bool) and math.isfinite(seed) and seed == int(seed)
    if not whole:
        raise ValueError(f"seed must be a whole number (-1: a random one), got {seed!r}")
    if seed < 0:
        return random.randrange(SEED_RANGE)
    if seed > SEED_MAX:
        raise ValueError(f"seed must lie in 0..{SEED_MAX} (-1: a random one), got {int(seed)}")
    return int(seed)
