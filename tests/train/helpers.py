"""A tiny synthetic speech-like corpus and model for training tests."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import soundfile as sf

from flowtts.config import ModelConfig
from flowtts.model.build import build_model

TINY_TRAIN = ModelConfig(dim=32, depth=2, heads=2, dim_head=16, text_dim=16, conv_layers=1, ff_mult=2, dropout=0.0)
TINY_BACKBONES = {"DiT": TINY_TRAIN, "UNetT": dataclasses.replace(TINY_TRAIN, backbone="UNetT")}
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


def tiny_model(vocab, seed: int = 0, backbone: str = "DiT"):
    import torch

    torch.manual_seed(seed)
    return build_model(TINY_BACKBONES[backbone], vocab)


def prepared_corpus(root: str, n: int = 8) -> str:
    """A prepared :func:`write_corpus` of ``n`` utterances under ``root``; returns its directory."""
    from flowtts.train.data import prepare_dataset

    prepare_dataset(write_corpus(root, n=n), None, os.path.join(root, "prepared"), progress=False)
    return os.path.join(root, "prepared")


def random_model(corpus: str, backbone: str = "DiT"):
    """The tiny model with randomised weights (std 0.1, seed 5) for ``corpus``'s vocabulary, in eval mode."""
    from conftest import randomise
    from flowtts.text import load_vocab
    from flowtts.train.data import MelDataset

    model = tiny_model(load_vocab(MelDataset(corpus).vocab_path()), backbone=backbone)
    return randomise(model, std=0.1, seed=5).eval()


def run_two_ranks(script: str, corpus: str, out_dir, config: dict) -> tuple[dict, dict]:
    """Run ``script`` (formatted with ``tests``, ``corpus``, ``out``, ``config``; it saves each rank's
    ``params{rank}.pt`` in ``out``) under ``torchrun --nproc_per_node=2``; returns the two state dicts."""
    import subprocess
    import sys

    import torch

    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(str(out_dir), "run.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(script.format(tests=tests, corpus=corpus, out=str(out_dir), config=config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tuple(torch.load(os.path.join(str(out_dir), f"params{r}.pt"), weights_only=True) for r in (0, 1))


class Killed(Exception):
    """Raised by :func:`kill_at`'s callback: a run stopped as if its process were killed."""


def kill_at(step: int):
    """An ``on_step`` callback that stops a run after ``step`` (raising :class:`Killed`)."""

    def on_step(done, loss):
        if done == step:
            raise Killed

    return on_step


def split_loop(kw: dict, defaults) -> dict:
    """``kw`` with its loop settings (``steps=``, ``lr=``...) moved into ``loop``: ``defaults`` with them.

    Lets a test write a run config's loop settings among its other fields, as its overrides.
    """
    names = {f.name for f in dataclasses.fields(defaults)}
    loop = defaults.with_overrides(**{k: v for k, v in kw.items() if k in names})
    return {**{k: v for k, v in kw.items() if k not in names}, "loop": loop}
