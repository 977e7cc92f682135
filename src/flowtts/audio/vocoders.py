"""Vocoders turning log-mels ``(b, d, n)`` into waves ``(b, nw)``.

* :class:`GriffinLim` is built in: it inverts the mel filterbank (non-negative least squares) and
  recovers a phase with fast Griffin-Lim. Works everywhere, needs no weights; sounds robotic.
* :class:`VocosVocoder` wraps the ``vocos`` package (``pip install 'flowtts[vocos]'``) with weights the
  user has on disk; nothing is downloaded.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from flowtts.model.mel import MelSpec


class GriffinLim(nn.Module):
    """Log-mel -> wave for a given :class:`MelSpec` front end.

    Args:
        mel_spec: The front end the mels came from (its filterbank, FFT and hop are inverted).
        n_iter: Griffin-Lim iterations.
        momentum: Fast Griffin-Lim momentum (0 gives the classic algorithm).
        nnls_iter: Multiplicative-update iterations of the non-negative filterbank inversion.
        seed: Seed of the initial random phase (fixed, so the output is deterministic).
    """

    def __init__(self, mel_spec: MelSpec, n_iter: int = 48, momentum: float = 0.99, nnls_iter: int = 30, seed=0):
        super().__init__()
        self.mel_spec = mel_spec
        self.n_iter = n_iter
        self.momentum = momentum
        self.nnls_iter = nnls_iter
        self.seed = seed
        self.sample_rate = mel_spec.target_sample_rate

    def magnitudes(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Non-negative linear magnitudes ``(b, n_fft/2+1, n)`` whose mel projection fits ``exp(log_mel)``."""
        fb = self.mel_spec.filterbank.to(device=log_mel.device, dtype=torch.float32)
        mel = log_mel.float().exp()
        mag = (torch.linalg.pinv(fb) @ mel).clamp(min=1e-6)
        fb_t_mel = fb.t() @ mel
        gram = fb.t() @ fb
        for _ in range(self.nnls_iter):
            mag = mag * fb_t_mel / (gram @ mag + 1e-9)
        return mag

    @torch.no_grad()
    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        if log_mel.ndim == 2:
            log_mel = log_mel[None]
        spec = self.mel_spec
        mag = self.magnitudes(log_mel)
        window = torch.hann_window(spec.win_length, device=mag.device)
        frames = mag.shape[-1]
        length = (frames - 1) * spec.hop_length
        stft = dict(n_fft=spec.n_fft, hop_length=spec.hop_length, win_length=spec.win_length, window=window)
        g = torch.Generator().manual_seed(self.seed)
        phase = torch.rand(mag.shape, generator=g).to(mag.device) * 2 * math.pi
        angles = torch.polar(torch.ones_like(mag), phase)
        previous = torch.zeros_like(angles)
        for _ in range(self.n_iter):
            wave = torch.istft(mag * angles, length=length, **stft)
            rebuilt = torch.stft(wave, return_complex=True, **stft)
            accelerated = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            previous = rebuilt
            angles = accelerated / accelerated.abs().clamp(min=1e-8)
        return torch.istft(mag * angles, length=length, **stft)


class VocosVocoder(nn.Module):
    """Vocos (24 kHz, 100-band vocos mels) from a local directory with ``config.yaml`` and weights.

    Args:
        path: Directory holding ``config.yaml`` and ``pytorch_model.bin`` (or ``model.safetensors``).
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Vocos directory not found: {path}")
        config = os.path.join(path, "config.yaml")
        if not os.path.isfile(config):
            raise FileNotFoundError(f"{path}: no config.yaml (expected a local Vocos model directory)")
        weights = [os.path.join(path, n) for n in ("model.safetensors", "pytorch_model.bin")]
        weights = [w for w in weights if os.path.isfile(w)]
        if not weights:
            raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")
        try:
            from vocos import Vocos
        except ImportError as exc:
            raise ImportError("the Vocos vocoder needs the vocos extra: pip install 'flowtts[vocos]'") from exc
        if weights[0].endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(weights[0])
        else:
            state = torch.load(weights[0], map_location="cpu", weights_only=True)
        self.vocos = Vocos.from_hparams(config)
        self.vocos.load_state_dict(state)
        self.vocos.eval()
        self.sample_rate = 24_000

    @torch.no_grad()
    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.vocos.decode(log_mel.float())


def load_vocoder(mel_spec: MelSpec, path: str | os.PathLike | None = None) -> nn.Module:
    """Vocos from ``path`` when given, else the built-in Griffin-Lim."""
    if path is None:
        return GriffinLim(mel_spec)
    return VocosVocoder(path)
