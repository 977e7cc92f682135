"""Small vocoders for tests."""

from __future__ import annotations

import torch

from flowtts.config import MelConfig
from flowtts.vocoder.network import MelVocoder, VocoderConfig

SMALL_MEL = MelConfig(target_sample_rate=8000, n_mel_channels=12, hop_length=16, win_length=64, n_fft=64)


def small_vocoder(seed: int = 0, **overrides) -> MelVocoder:
    torch.manual_seed(seed)
    return MelVocoder(VocoderConfig(mel=SMALL_MEL, dim=8, blocks=1, kernel=3, mult=2.0, **overrides))
