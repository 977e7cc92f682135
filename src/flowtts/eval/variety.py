"""How much a sampler's output varies with its noise, and how far it lands from another sampler's.

Few-step students can collapse onto one rendition of a sentence whatever the noise; the variety of a
system is the spread of its log-mels across seeds (same sentence, same duration), and its distance to
a reference sampler (the teacher at 32 steps) is measured for the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check_mels(mels: Sequence[torch.Tensor], name: str) -> torch.Tensor:
    """``mels`` stacked to ``(k, d, n)`` (float64), or a ``ValueError`` naming ``name``."""
    if len(mels) < 2:
        raise ValueError(f"{name} must hold at least two mels (one per seed), got {len(mels)}")
    shapes = {tuple(m.shape) for m in mels}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"{name} must be (channels, frames) mels of one shape, got shapes {sorted(shapes)}")
    return torch.stack([m.detach().double() for m in mels])


def seed_spread(mels: Sequence[torch.Tensor]) -> float:
    """Mean over frames and channels of the standard deviation across seeds of one sentence's mels.

    Args:
        mels: One log-mel ``(d, n)`` per seed, all of the same duration (the generated frames only).

    Returns:
        The mean of the per-bin standard deviations (with Bessel's correction, ``k - 1`` in the divisor).

    Raises:
        ValueError: Fewer than two mels, or mels of different shapes.
    """
    return float(_check_mels(mels, "mels").std(dim=0, correction=1).mean())


def variety(mels_per_sentence: Sequence[Sequence[torch.Tensor]]) -> float:
    """:func:`seed_spread` averaged over sentences.

    Args:
        mels_per_sentence: For each sentence, its mels under different seeds.

    Raises:
        ValueError: No sentences, or a sentence whose mels :func:`seed_spread` refuses.
    """
    if len(mels_per_sentence) == 0:
        raise ValueError("mels_per_sentence must hold at least one sentence")
    return sum(seed_spread(m) for m in mels_per_sentence) / len(mels_per_sentence)


def mel_distance(mel: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean squared difference of two log-mels of the same shape (same sentence, noise and duration).

    Raises:
        ValueError: The shapes differ.
    """
    if mel.shape != reference.shape:
        shapes = f"{tuple(mel.shape)} and {tuple(reference.shape)}"
        raise ValueError(f"mel and reference must have the same shape, got {shapes}")
    return float(((mel.detach().double() - reference.detach().double()) ** 2).mean())
