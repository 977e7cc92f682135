"""Vocoder training data: the waves of a corpus, held in memory, and random segments of them.

A corpus is a ``metadata.csv`` (F5-TTS's ``audio_file|text`` layout; only the audio is read) or a prepared
dataset's folder (its ``index.jsonl`` names the audio). Waves are resampled to the vocoder's rate and kept
as int16. Segments are drawn with a generator seeded by ``(seed, step)``, so a resumed run sees the same
batches as one that never stopped.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch


def corpus_audio_files(path: str) -> list[str]:
    """The audio files of a corpus given as ``metadata.csv`` or a prepared dataset folder.

    Raises:
        FileNotFoundError: Neither a metadata file nor a folder with ``index.jsonl`` or ``metadata.csv``.
    """
    from flowtts.train.data import read_metadata

    if os.path.isdir(path):
        index = os.path.join(path, "index.jsonl")
        if os.path.isfile(index):
            return _prepared_audio_files(path, index)
        path = os.path.join(path, "metadata.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus: {path} is not a metadata.csv or a prepared dataset folder")
    root = os.path.dirname(os.path.abspath(path))
    return [a if os.path.isabs(a) else os.path.join(root, a) for _, a, _ in read_metadata(path)]


def _prepared_audio_files(folder: str, index: str) -> list[str]:
    """The audio of a prepared dataset, its relative paths taken from the folder its ``dataset.json`` records
    (``audio_dir``).

    Raises:
        FileNotFoundError: Relative paths and no ``audio_dir`` (a folder prepared by an older flowtts).
        ValueError: A row of ``index.jsonl`` without an audio path (its line named).
    """
    files = []
    with open(index, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                files.append(str(json.loads(line)["audio"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"corpus: {index} line {number} is not a row with an 'audio' path") from None
    info = os.path.join(folder, "dataset.json")
    root = None
    if os.path.isfile(info):
        with open(info, encoding="utf-8") as f:
            root = json.load(f).get("audio_dir")
    if root is None and not all(os.path.isabs(a) for a in files):
        raise FileNotFoundError(
            f"corpus: {folder} does not record the folder its audio paths are relative to (prepared by an older "
            "flowtts): prepare it again, or give its metadata.csv"
        )
    return [a if os.path.isabs(a) else os.path.join(root, a) for a in files]


class WaveCorpus:
    """Every wave of a corpus at ``sample_rate``, as int16, and batches of random segments.

    Args:
        files: Audio files.
        sample_rate: The vocoder's rate (files at other rates are resampled).
        min_samples: Waves shorter than this are skipped.

    Raises:
        ValueError: No wave is long enough.
    """

    def __init__(self, files: list[str], sample_rate: int, min_samples: int):
        from flowtts.audio.io import read_audio

        self.waves = []
        for path in files:
            wave, _ = read_audio(path, sample_rate)
            if wave.numel() >= min_samples:
                self.waves.append((wave.clamp(-1, 1) * 32767).round().to(torch.int16))
        if not self.waves:
            raise ValueError(f"corpus: none of its {len(files)} waves has {min_samples} samples or more")
        self.seconds = sum(w.numel() for w in self.waves) / sample_rate

    def batch(self, size: int, samples: int, seed: int, step: int, gain_db: tuple[float, float]) -> torch.Tensor:
        """``size`` random segments ``(size, samples)`` for ``step``, each at a random gain in ``gain_db``."""
        rng = np.random.default_rng([seed, step])
        out = torch.empty(size, samples)
        for i in range(size):
            wave = self.waves[rng.integers(len(self.waves))]
            start = rng.integers(max(1, wave.numel() - samples + 1))
            piece = wave[start : start + samples].float() / 32767
            if piece.numel() < samples:
                piece = torch.nn.functional.pad(piece, (0, samples - piece.numel()))
            out[i] = piece * 10 ** (rng.uniform(*gain_db) / 20)
        return out
