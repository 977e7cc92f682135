"""The training curves of few-step runs side by side: each run's logged loss against its step.

Usage: python benchmarks/few_step_curves.py --run NAME=RUN_DIR [--run ...] --out curves.png

Each ``RUN_DIR`` is a ``flowtts distill --method M`` run directory (its ``fewstep_log.csv``); a panel per run,
since the methods' losses are on different scales. Prints, per run, the steps, the wall time and the mean
loss of the first and last tenth of the steps.
"""

from __future__ import annotations

import argparse
import csv
import os


def read_log(run_dir: str) -> list[dict]:
    """The rows of ``run_dir/fewstep_log.csv``."""
    path = os.path.join(run_dir, "fewstep_log.csv")
    if not os.path.isfile(path):
        raise ValueError(f"--run: no fewstep_log.csv in {run_dir}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tenth_means(rows: list[dict]) -> tuple[float, float]:
    """Mean loss of the first and of the last tenth of the logged rows."""
    losses = [float(r["loss"]) for r in rows]
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR, repeatable")
    parser.add_argument("--out", required=True, help="the figure (png)")
    args = parser.parse_args()
    runs = []
    for spec in args.run:
        name, sep, path = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"--run must be NAME=RUN_DIR, got {spec!r}")
        runs.append((name, read_log(path)))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), squeeze=False)
    print(f"{'run':<24} {'steps':>6} {'minutes':>8} {'loss, first tenth':>18} {'last tenth':>11}")
    for ax, (name, rows) in zip(axes[0], runs):
        steps = [int(r["step"]) for r in rows]
        ax.plot(steps, [float(r["loss"]) for r in rows], lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        first, last = tenth_means(rows)
        print(f"{name:<24} {steps[-1]:>6} {float(rows[-1]['elapsed_s']) / 60:>8.1f} {first:>18.4f} {last:>11.4f}")
    axes[0][0].set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
