"""Records for the preferences-file tests: deterministic, and exact in float16 (what the file stores)."""

from __future__ import annotations

import torch

from flowtts.prefs.store import PreferencePair


def mel(seed: int, frames: int, d: int = 100) -> torch.Tensor:
    """A log-mel-like ``(frames, d)`` whose values float16 holds exactly."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(frames, d, generator=g) * 2 - 5).half().float()


def record(i: int, frames: int | None = None) -> PreferencePair:
    """Record ``i``: its own id, text, mels (a few hundred frames; large lines make a kill mid-write likely)."""
    frames = frames if frames is not None else 200 + (37 * i) % 400
    return PreferencePair(
        text=f"sentence number {i}",
        prompt_text="" if i % 2 else "the prompt",
        prompt_frames=1 + i % 3,
        mel_a=mel(2 * i, frames),
        mel_b=mel(2 * i + 1, frames + i % 5),
        choice=("a", "b", "same")[i % 3],
        settings_a={"model": "builtin:student", "seed": 2 * i},
        settings_b={"model": "builtin:student", "seed": 2 * i + 1},
        human=bool(i % 2),
        time="2026-01-02T03:04:05+00:00",
        judge="listener" if i % 2 else "pocketsphinx",
        id=f"record-{i}",
    )


def same(a: PreferencePair, b: PreferencePair) -> bool:
    """Whether two records are equal, mels exactly."""
    fields = ("text", "prompt_text", "prompt_frames", "choice", "settings_a", "settings_b", "human", "time", "judge")
    fields = (*fields, "id")
    return (
        all(getattr(a, f) == getattr(b, f) for f in fields)
        and torch.equal(a.mel_a, b.mel_a)
        and torch.equal(a.mel_b, b.mel_b)
    )
