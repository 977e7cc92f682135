"""A tiny synthetic speech-like corpus and model for training tests."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

from flowtts.config import ModelConfig
from flowtts.model.build import build_model

TINY_TRAIN = ModelConfig(dim=32, depth=2, heads=2, dim_head=16, text_dim=16, conv_layers=1, ff_mult=2, dropout=0.0)
SENTENCES = ["a cat sat", "the dog ran far", "blue sky", "red fox jumps high", "we go home now", "it is late"]


def write_corpus(directory: str, n: int = 12, seed: int = 0) -> str:
    """Tones whose pitch follows the text: enough structure for a loss to fall. Returns metadata path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(directory, "wavs"), exist_ok=True)
    lines = []
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        seconds = 0.25 + 0.03 * len(text) + 0.05 * rng.random()
        t = np.arange(int(24000 * seconds)) / 24000
        f0 = 120 + 8 * (ord(text[0]) - 97) + 40 * np.sin(2 * np.pi * t * (1 + i % 3))
        wave = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / 24000) + 0.01 * rng.standard_normal(t.size)
        sf.write(os.path.join(directory, "wavs", f"{i:03d}.wav"), wave.astype(np.float32), 24000)
        lines.append(f"wavs/{i:03d}.wav|{text}")
    path = os.path.join(directory, "metadata.csv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("audio_file|text\n" + "\n".join(lines) + "\n")
    return path


def tiny_model(vocab, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return build_model(TINY_TRAIN, vocab)
