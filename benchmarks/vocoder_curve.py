"""The training curve of a vocoder run: its logged losses against the step, and quality checkpoints beside them.

Usage: python benchmarks/vocoder_curve.py --run RUN_DIR [--point STEP=DNSMOS ...] --out curve.png

``RUN_DIR`` is a ``flowtts vocoder train`` run directory (its ``vocoder_log.csv``). Each ``--point`` is a
DNSMOS P.808 measured on a snapshot of the run (``benchmarks/vocoder.py --vocoder SNAPSHOT``), drawn on a
second panel with the Griffin-Lim and recordings levels given by ``--griffin-lim`` and ``--recordings``.
Prints the mean of each loss over the first and last tenth of the logged rows.
"""

from __future__ import annotations

import argparse
import csv
import os

LOSSES = ("mel", "stft", "phase")


def read_log(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "vocoder_log.csv")
    if not os.path.isfile(path):
        raise ValueError(f"--run: no vocoder_log.csv in {run_dir}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def parse_point(value: str) -> tuple[int, float]:
    step, sep, score = value.partition("=")
    try:
        return int(step), float(score)
    except ValueError:
        raise ValueError(f"--point must be STEP=DNSMOS, got {value!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="vocoder run directory")
    parser.add_argument("--point", action="append", default=[], help="STEP=DNSMOS of a snapshot, repeatable")
    parser.add_argument("--griffin-lim", type=float, help="Griffin-Lim's DNSMOS on the same sentences")
    parser.add_argument("--recordings", type=float, help="the recordings' DNSMOS on the same sentences")
    parser.add_argument("--out", required=True, help="the figure (png)")
    args = parser.parse_args()
    rows = read_log(args.run)
    points = sorted(parse_point(p) for p in args.point)
    k = max(1, len(rows) // 10)
    for name in LOSSES:
        values = [float(r[name]) for r in rows]
        print(f"{name}: first tenth {sum(values[:k]) / k:.4f}, last tenth {sum(values[-k:]) / k:.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 2 if points else 1, figsize=(11 if points else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    for name in LOSSES:
        ax.plot(steps, [float(r[name]) for r in rows], label=name, linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("training losses (per batch)")
    ax.legend()
    if points:
        ax = axes[0][1]
        ax.plot([s for s, _ in points], [d for _, d in points], "o-", label="built-in vocoder (EMA)")
        for level, label, style in ((args.griffin_lim, "Griffin-Lim", "--"), (args.recordings, "recordings", ":")):
            if level is not None:
                ax.axhline(level, linestyle=style, color="gray", label=label)
        ax.set_xlabel("step")
        ax.set_title("DNSMOS P.808, selection recordings")
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
