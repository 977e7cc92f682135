"""Slim discriminators of vocoder training, and their hinge and feature-matching losses.

Shapes: ``b`` batch, ``nw`` samples.

* :class:`PeriodDiscriminator` (HiFi-GAN's multi-period): the wave folded into ``(nw / p, p)`` columns and
  read by 2-D convolutions along time, one per period ``p``;
* :class:`ResolutionDiscriminator` (UnivNet's multi-resolution): 2-D convolutions over one STFT magnitude;
* :class:`Discriminators`: both sets; ``forward`` returns every sub-discriminator's score map and its
  intermediate features.

Widths are a fraction of the papers' (about 190 thousand parameters in all) and the resolution discriminators
halve the bins from their first layer: a step of both sets on 8 segments of 0.5 s costs about 0.5 s of one
CPU core forward and backward, where the papers' widths cost ten times that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

PERIODS = (2, 3, 5, 7, 11)
RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


class PeriodDiscriminator(nn.Module):
    """One period of the multi-period discriminator."""

    def __init__(self, period: int, widths=(8, 16, 32, 64)):
        super().__init__()
        self.period = period
        layers, c_in = [], 1
        for c_out in widths:
            layers.append(weight_norm(nn.Conv2d(c_in, c_out, (5, 1), (3, 1), padding=(2, 0))))
            c_in = c_out
        layers.append(weight_norm(nn.Conv2d(c_in, c_in, (5, 1), 1, padding=(2, 0))))
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(c_in, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t = wave.shape
        pad = (-t) % self.period
        x = F.pad(wave, (0, pad), mode="reflect") if pad else wave
        x = x.view(b, 1, -1, self.period)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.1)
            features.append(x)
        return self.out(x).flatten(1), features


class ResolutionDiscriminator(nn.Module):
    """One resolution of the multi-resolution discriminator (log-compressed magnitude input)."""

    def __init__(self, n_fft: int, hop: int, width: int = 8):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.layers = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(1, width, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(width, width, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(width, width, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(width, width, (3, 3), padding=(1, 1))),
            ]
        )
        self.out = weight_norm(nn.Conv2d(width, 1, (3, 3), padding=(1, 1)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        window = torch.hann_window(self.n_fft, device=wave.device, dtype=wave.dtype)
        spec = torch.stft(wave, self.n_fft, hop_length=self.hop, window=window, center=True, return_complex=True)
        x = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9).add(1).log()
        x = x.transpose(1, 2).unsqueeze(1)  # (b, 1, frames, bins)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.1)
            features.append(x)
        return self.out(x).flatten(1), features


class Discriminators(nn.Module):
    """Every period and resolution discriminator.

    Args:
        periods: The multi-period discriminator's periods.
        resolutions: ``(n_fft, hop)`` of each resolution discriminator.
    """

    def __init__(self, periods=PERIODS, resolutions=RESOLUTIONS):
        super().__init__()
        self.subs = nn.ModuleList(
            [PeriodDiscriminator(p) for p in periods] + [ResolutionDiscriminator(n, h) for n, h in resolutions]
        )

    def forward(self, wave: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [sub(wave) for sub in self.subs]


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Hinge loss of the discriminators: real scores pushed above 1, fake below -1 (mean over subs)."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake)]
    return torch.stack(terms).mean()


def generator_loss(fake: list) -> torch.Tensor:
    """Hinge loss of the generator: raise every sub-discriminator's score of the fake wave."""
    return torch.stack([F.relu(1 - f).mean() for f, _ in fake]).mean()


def feature_matching_loss(real: list, fake: list) -> torch.Tensor:
    """Mean L1 between the discriminators' features of the real wave (fixed) and of the fake one."""
    terms = [
        F.l1_loss(f_feat, r_feat.detach())
        for (_, r_feats), (_, f_feats) in zip(real, fake)
        for r_feat, f_feat in zip(r_feats, f_feats)
    ]
    return torch.stack(terms).mean()
