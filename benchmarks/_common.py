"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

CONFIGS = {
    "tiny": dict(dim=64, depth=2, heads=4, dim_head=16, text_dim=32, ff_mult=2, conv_layers=2),
    "small": dict(dim=512, depth=8, heads=8, ff_mult=2, text_dim=256, conv_layers=4),
    "F5TTS_v1_Base": dict(dim=1024, depth=22, heads=16, ff_mult=2, text_dim=512, conv_layers=4),
}

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods."


def randomise_(module: torch.nn.Module, std: float = 0.02, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def median_times(cells: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each callable; runs round-robin so drifts in machine speed hit all alike."""
    for fn in cells.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {label: [] for label in cells}
    for _ in range(repeats):
        for label, fn in cells.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(ts) for label, ts in times.items()}


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))
    return "\n".join(lines)
