"""Reconstruction losses of vocoder training: on the predicted spectrum and on the wave it makes.

Shapes: ``b`` batch, ``nw`` samples, ``f`` bins, ``n`` frames.

* :func:`multi_resolution_stft_loss`: spectral convergence plus log-magnitude L1 at several FFT sizes
  (Parallel WaveGAN's auxiliary loss), on the wave;
* :func:`mel_loss`: L1 between log-mels of the two waves (HiFi-GAN's reconstruction term);
* :func:`phase_losses`: APNet's anti-wrapping losses between the predicted and the recorded phase: the
  instantaneous phase, its difference across bins (group delay) and across frames (instantaneous
  frequency), each weighted by the recording's magnitude so silent bins, whose phase is noise, count little.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def stft_resolutions(n_fft: int, hop: int) -> tuple[tuple[int, int], ...]:
    """``(n_fft, hop)`` of the STFT losses around a front end's: half, same and double (window = n_fft).

    For the F5-TTS front end (1024, 256): (512, 128), (1024, 256), (2048, 512).
    """
    return tuple((n_fft * k // 2, max(1, hop * k // 2)) for k in (1, 2, 4))


RESOLUTIONS = stft_resolutions(1024, 256)


def stft_magnitude(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``|STFT|`` ``(b, f, n)`` of ``wave`` ``(b, nw)`` (Hann window of ``n_fft``, centred)."""
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft, hop_length=hop, window=window, center=True, return_complex=True)
    return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)


def multi_resolution_stft_loss(predicted: torch.Tensor, target: torch.Tensor, resolutions=RESOLUTIONS) -> torch.Tensor:
    """Mean over ``resolutions`` of spectral convergence plus log-magnitude L1 (two waves ``(b, nw)``)."""
    total = predicted.new_zeros(())
    for n_fft, hop in resolutions:
        p, t = stft_magnitude(predicted, n_fft, hop), stft_magnitude(target, n_fft, hop)
        convergence = torch.linalg.norm(t - p, dim=(1, 2)) / torch.linalg.norm(t, dim=(1, 2)).clamp(min=1e-5)
        total = total + convergence.mean() + F.l1_loss(p.log(), t.log())
    return total / len(resolutions)


def mel_loss(mel_spec, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the log-mels ``mel_spec`` makes of the two waves ``(b, nw)``."""
    return F.l1_loss(mel_spec(predicted), mel_spec(target))


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """``|x - 2 pi round(x / 2 pi)|``: the distance of an angle difference from the nearest whole turn."""
    return (x - 2 * math.pi * torch.round(x / (2 * math.pi))).abs()


def phase_losses(
    phase: torch.Tensor, target_phase: torch.Tensor, target_magnitude: torch.Tensor
) -> dict[str, torch.Tensor]:
    """APNet's instantaneous-phase, group-delay and instantaneous-frequency losses, magnitude-weighted.

    Args:
        phase: Predicted phase ``(b, f, n)``.
        target_phase: The recording's phase, same shape.
        target_magnitude: The recording's magnitude, same shape (weights; normalised to mean 1).

    Returns:
        ``{"ip", "gd", "iaf"}`` scalar losses.
    """
    weight = target_magnitude / target_magnitude.mean().clamp(min=1e-8)
    diff = phase - target_phase
    return {
        "ip": (anti_wrap(diff) * weight).mean(),
        "gd": (anti_wrap(diff.diff(dim=1)) * weight[:, 1:]).mean(),
        "iaf": (anti_wrap(diff.diff(dim=2)) * weight[:, :, 1:]).mean(),
    }
