"""Log-mel front end compatible with F5-TTS (vocos-style and bigvgan-style).

Shapes: ``b`` batch, ``nw`` samples, ``d`` mel channels, ``n`` frames.

Both extractors are plain ``torch.stft`` plus a mel filterbank built here, so neither torchaudio nor
librosa is needed at run time:

* ``vocos``: centred reflect-padded STFT, magnitude (power 1), HTK mel filterbank without area
  normalisation, ``log(clamp(mel, 1e-5))`` -- what ``torchaudio.transforms.MelSpectrogram(power=1,
  center=True, norm=None)`` computes.
* ``bigvgan``: manual reflect padding of ``(n_fft - hop) / 2`` and an uncentred STFT,
  ``sqrt(re^2 + im^2 + 1e-9)``, Slaney mel filterbank with Slaney area normalisation (librosa's
  default), ``log(clamp(mel, 1e-5))``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowtts.config import MelConfig

MEL_SPEC_TYPES = ("vocos", "bigvgan")


def _hz_to_mel_htk(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz_htk(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


# Slaney's auditory-toolbox scale: linear below 1 kHz, logarithmic above.
_SLANEY_F_SP = 200.0 / 3
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    mel = f / _SLANEY_F_SP
    log_region = f >= _SLANEY_MIN_LOG_HZ
    mel = np.where(
        log_region,
        _SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP,
        mel,
    )
    return mel


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f = _SLANEY_F_SP * m
    log_region = m >= _SLANEY_MIN_LOG_MEL
    return np.where(log_region, _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL)), f)


def _triangles(fft_freqs: np.ndarray, band_edges: np.ndarray) -> np.ndarray:
    """Triangular filters ``(n_mels, n_freqs)`` whose corners are consecutive ``band_edges``."""
    widths = np.diff(band_edges)
    ramps = band_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(lower, upper))


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    *,
    fmin: float = 0.0,
    fmax: float | None = None,
    scale: str = "htk",
) -> torch.Tensor:
    """Mel filterbank as a float32 tensor of shape ``(n_mels, n_fft // 2 + 1)``.

    Args:
        sample_rate: Audio sample rate in Hz.
        n_fft: FFT size.
        n_mels: Number of mel bands.
        fmin: Lowest band edge in Hz.
        fmax: Highest band edge in Hz (``sample_rate / 2`` when ``None``).
        scale: ``"htk"`` (no area normalisation, torchaudio's ``norm=None`` layout: frequency bins
            spaced on ``linspace(0, sr // 2)``) or ``"slaney"`` (Slaney scale and area
            normalisation, librosa's default).
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    n_freqs = n_fft // 2 + 1
    if scale == "htk":
        fft_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
        mels = np.linspace(_hz_to_mel_htk(np.float64(fmin)), _hz_to_mel_htk(np.float64(fmax)), n_mels + 2)
        edges = _mel_to_hz_htk(mels)
        return torch.from_numpy(_triangles(fft_freqs, edges)).float()
    if scale == "slaney":
        fft_freqs = np.linspace(0.0, sample_rate / 2, n_freqs)
        mels = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
        edges = _mel_to_hz_slaney(mels)
        weights = _triangles(fft_freqs, edges)
        weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
        # librosa builds its filters in float32.
        return torch.from_numpy(weights.astype(np.float32))
    raise ValueError(f"scale must be 'htk' or 'slaney', got {scale!r}")


class MelSpec(nn.Module):
    """Waveform ``(b, nw)`` -> log-mel ``(b, d, n)``, as F5-TTS's ``MelSpec``.

    Args:
        n_fft: FFT size.
        hop_length: Hop between frames in samples.
        win_length: Hann window length.
        n_mel_channels: Number of mel bands ``d``.
        target_sample_rate: Sample rate the model works at.
        mel_spec_type: ``"vocos"`` or ``"bigvgan"``.
    """

    def __init__(
        self,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
        n_mel_channels: int = 100,
        target_sample_rate: int = 24_000,
        mel_spec_type: str = "vocos",
    ):
        super().__init__()
        if mel_spec_type not in MEL_SPEC_TYPES:
            raise ValueError(f"mel_spec_type must be one of {MEL_SPEC_TYPES}, got {mel_spec_type!r}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.n_mel_channels = n_mel_channels
        self.target_sample_rate = target_sample_rate
        self.mel_spec_type = mel_spec_type
        scale = "htk" if mel_spec_type == "vocos" else "slaney"
        # Non-persistent: F5-TTS state dicts carry no mel buffers.
        self.register_buffer(
            "filterbank", mel_filterbank(target_sample_rate, n_fft, n_mel_channels, scale=scale), persistent=False
        )
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def spectrum(self, wav: torch.Tensor) -> torch.Tensor:
        """The complex STFT ``(b, n_fft // 2 + 1, n)`` of ``wav`` ``(b, nw)`` that the ``vocos`` front end's mel is
        taken from (centred, reflect-padded, Hann window): what a vocoder of these mels inverts."""
        window = self.window.to(device=wav.device, dtype=wav.dtype)
        return torch.stft(
            wav,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim == 3 and wav.shape[1] == 1:
            wav = wav.squeeze(1)
        if wav.ndim != 2:
            raise ValueError(f"wav must have shape (batch, samples), got {tuple(wav.shape)}")
        wav = wav.float()
        window = self.window.float().to(wav.device)
        filterbank = self.filterbank.float().to(wav.device)
        if self.mel_spec_type == "vocos":
            spec = self.spectrum(wav).abs()
        else:
            pad = (self.n_fft - self.hop_length) // 2
            wav = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
            spec = torch.stft(
                wav,
                self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=window,
                center=False,
                normalized=False,
                onesided=True,
                return_complex=True,
            )
            spec = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
        mel = torch.matmul(filterbank, spec)
        return mel.clamp(min=1e-5).log()


def mel_config_of(model) -> MelConfig:
    """The :class:`flowtts.config.MelConfig` of ``model``'s mel front end (its ``mel_spec``)."""
    spec = model.mel_spec
    return MelConfig(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(MelConfig)})
