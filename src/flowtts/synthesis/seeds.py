"""The seed a synthesis uses: the one asked for, or a random one (F5-TTS's ``-1``), drawn in one place."""

from __future__ import annotations

import random

SEED_RANGE = 2**31  # random seeds are drawn from 0..SEED_RANGE-1, as F5-TTS's


def choose_seed(seed: int | None = None) -> int:
    """``seed`` itself, or a random one for ``None`` and negative values (``-1``: "random", as in F5-TTS)."""
    if seed is None or int(seed) < 0:
        return random.randrange(SEED_RANGE)
    return int(seed)
