"""Joining waves with linear cross-fades."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def fade_join(left: torch.Tensor, right: torch.Tensor, samples: int) -> torch.Tensor:
    """``left`` then ``right``, overlapped by a linear cross-fade of ``min(samples, len(left), len(right))``."""
    n = min(samples, left.numel(), right.numel())
    if n <= 0:
        return torch.cat((left, right))
    ramp = torch.linspace(0, 1, n, dtype=left.dtype)
    mixed = left[left.numel() - n :] * (1 - ramp) + right[:n] * ramp
    return torch.cat((left[: left.numel() - n], mixed, right[n:]))


def cross_fade(waves: Sequence[torch.Tensor], samples: int) -> torch.Tensor:
    """Concatenate with linear cross-fades of ``samples`` (shortened where a wave is shorter)."""
    out = waves[0]
    for wave in waves[1:]:
        out = fade_join(out, wave, samples)
    return out
