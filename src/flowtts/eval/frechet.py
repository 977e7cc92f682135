"""Fréchet distance between sets of log-mel frames (an FID for spectrogram frames).

Each system's frames (log-mel channels and their first-order deltas) are summarised by a Gaussian (mean,
covariance over all frames of all its sentences); the distance between two systems is the Fréchet
(2-Wasserstein) distance between their Gaussians,
``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``, computed in float64 through symmetric
eigen-decompositions, so it needs neither scipy nor a non-symmetric matrix square root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Gaussian:
    """Mean ``(d,)`` and covariance ``(d, d)`` (float64) of a set of feature vectors."""

    mean: torch.Tensor
    cov: torch.Tensor
    count: int


def frame_features(mel: torch.Tensor) -> torch.Tensor:
    """Log-mel frames with their first-order deltas: ``(d, n)`` -> ``(n, 2 d)``.

    The delta of frame ``j`` is ``(x[j + 1] - x[j - 1]) / 2`` with the edge frames repeated.

    Raises:
        ValueError: ``mel`` is not 2-D with at least one frame.
    """
    if not isinstance(mel, torch.Tensor) or mel.ndim != 2 or mel.shape[1] < 1:
        raise ValueError(f"mel must be a (channels, frames) tensor with frames >= 1, got {getattr(mel, 'shape', mel)}")
    x = mel.detach().double().t()
    padded = torch.cat([x[:1], x, x[-1:]])
    deltas = (padded[2:] - padded[:-2]) / 2
    return torch.cat([x, deltas], dim=1)


def fit_gaussian(features: Sequence[torch.Tensor] | torch.Tensor) -> Gaussian:
    """Mean and (unbiased) covariance of feature rows ``(n, d)``, or of a sequence of them pooled.

    Raises:
        ValueError: No rows, fewer than two rows, or rows of different widths.
    """
    parts = [features] if isinstance(features, torch.Tensor) else list(features)
    if not parts or any(p.ndim != 2 for p in parts) or len({p.shape[1] for p in parts}) != 1:
        raise ValueError("features must be one or more (n, d) tensors of the same width d")
    x = torch.cat([p.double() for p in parts])
    if x.shape[0] < 2:
        raise ValueError(f"features must hold at least two rows to fit a covariance, got {x.shape[0]}")
    mean = x.mean(0)
    centred = x - mean
    return Gaussian(mean=mean, cov=centred.t() @ centred / (x.shape[0] - 1), count=x.shape[0])


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative rounding clipped to 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.t()) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.t()


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """Fréchet distance between two Gaussians (squared 2-Wasserstein distance).

    ``tr((S1 S2)^1/2)`` is taken as ``tr((R S2 R)^1/2)`` with ``R = S1^1/2``: ``R S2 R`` is symmetric
    positive semi-definite, so both roots come from symmetric eigen-decompositions.

    Raises:
        ValueError: Means or covariances of different sizes.
    """
    if a.mean.shape != b.mean.shape or a.cov.shape != b.cov.shape or a.cov.shape != (a.mean.numel(),) * 2:
        raise ValueError(f"the Gaussians differ in size: {tuple(a.cov.shape)} and {tuple(b.cov.shape)}")
    root = _sqrt_psd(a.cov.double())
    cross = _sqrt_psd(root @ b.cov.double() @ root)
    diff = a.mean.double() - b.mean.double()
    value = diff @ diff + torch.trace(a.cov.double()) + torch.trace(b.cov.double()) - 2 * torch.trace(cross)
    return max(float(value), 0.0)


def mel_frechet(mels_a: Sequence[torch.Tensor], mels_b: Sequence[torch.Tensor]) -> float:
    """Fréchet distance between the frames (with deltas) of two sets of log-mels ``(d, n)``."""
    a = fit_gaussian([frame_features(m) for m in mels_a])
    b = fit_gaussian([frame_features(m) for m in mels_b])
    return frechet_distance(a, b)
