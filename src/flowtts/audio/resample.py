"""Band-limited resampling by a rational factor (Hann-windowed sinc, polyphase convolution)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _kernels(orig: int, new: int, width_zeros: int, rolloff: float, dtype, device):
    cutoff = min(orig, new) * rolloff  # in units where the slower rate's Nyquist is min(orig, new) / 2
    width = math.ceil(width_zeros * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64, device=device) / orig
    phases = -torch.arange(new, dtype=torch.float64, device=device)[:, None] / new
    t = (phases + taps[None, :]) * cutoff
    t = t.clamp(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (cutoff / orig)).to(dtype), width


def resample(
    wave: torch.Tensor, orig_rate: int, new_rate: int, width_zeros: int = 16, rolloff: float = 0.95
) -> torch.Tensor:
    """Resample ``wave`` (``(..., nw)``) from ``orig_rate`` to ``new_rate``.

    Args:
        wave: Waveform(s), time last.
        orig_rate: Input rate in Hz.
        new_rate: Output rate in Hz.
        width_zeros: Sinc zero crossings on each side of the kernel (quality vs cost).
        rolloff: Low-pass cutoff as a fraction of the lower Nyquist frequency.

    Returns:
        ``ceil(nw * new_rate / orig_rate)`` samples per wave.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
    if orig_rate == new_rate:
        return wave
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    shape = wave.shape
    x = wave.reshape(-1, 1, shape[-1])
    kernels, width = _kernels(orig, new, width_zeros, rolloff, x.dtype, x.device)
    x = F.pad(x, (width, width + orig))
    y = F.conv1d(x, kernels[:, None, :], stride=orig)  # (B, new, frames)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    n_out = math.ceil(new * shape[-1] / orig)
    return y[:, :n_out].reshape(*shape[:-1], n_out)
