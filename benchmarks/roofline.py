"""How close ``sample()`` runs to the machine's matrix-multiply rate, per dtype.

Usage: python benchmarks/roofline.py [--configs tiny small F5TTS_v1_Base] [--frames 300 470]
           [--dtypes float32 bfloat16] [--steps 8] [--repeats 3] [--threads 2] [--device cpu]

For each config and frame count (random weights, batch 1, cfg 2, sway -1, a third of the frames as
prompt):

* FLOPs per sampling step, counted with ``torch.utils.flop_counter.FlopCounterMode`` as the difference
  between a ``steps+1``- and a ``steps``-step call (so the one-off text conditioning is excluded);
* wall time of ``sample(steps=...)`` in each dtype (median of ``--repeats``), as seconds per step and
  achieved GFLOP/s (whole-call FLOPs / whole-call time);
* the matrix-multiply rate of the same dtype on the same machine, measured on the model's own
  feed-forward GEMM shape and on a 2048^3 product (the larger of the two is the roof);
* when upstream F5-TTS is installed, its float32 ``sample()`` time and our time / upstream's.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(__file__))
from _common import CONFIGS, TEXT, median_times, randomise_, table  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, seconds: float = 0.5) -> float:
    """GFLOP/s of ``(m, k) @ (k, n)`` in ``dtype``, best of repeated timing windows."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 3 * 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small", "F5TTS_v1_Base"], choices=sorted(CONFIGS))
    parser.add_argument("--frames", nargs="+", type=int, default=[300, 470])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=8, help="steps per timed sample() call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-upstream", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    upstream = None
    if not args.no_upstream:
        try:
            from upstream import load_upstream

            upstream = load_upstream()
        except ImportError:
            upstream = None

    from flowtts import CFM, DiT

    roof_cache: dict[tuple, float] = {}
    rows = []
    for name in args.configs:
        config = CONFIGS[name]
        model = CFM(DiT(**config)).eval()
        randomise_(model)
        model.to(device)
        theirs = None
        if upstream is not None and device.type == "cpu":
            theirs = upstream[0](upstream[1](**config)).eval()
            theirs.load_state_dict(model.state_dict())
        dim = config["dim"]
        for frames in args.frames:
            cond = torch.randn(1, frames // 3, 100, generator=torch.Generator().manual_seed(0)).to(device)
            kw = dict(cfg_strength=2.0, sway_sampling_coef=-1.0, seed=0)
            whole = count_flops(functools.partial(model.sample, cond, [TEXT], frames, steps=args.steps, **kw))
            one_more = count_flops(functools.partial(model.sample, cond, [TEXT], frames, steps=args.steps + 1, **kw))
            per_step = one_more - whole
            cells = {
                dt: functools.partial(model.sample, cond, [TEXT], frames, steps=args.steps, dtype=DTYPES[dt], **kw)
                for dt in args.dtypes
            }
            if theirs is not None:
                cells["upstream"] = functools.partial(theirs.sample, cond, [TEXT], frames, steps=args.steps, **kw)
            times = median_times(cells, args.repeats)
            for dt in args.dtypes:
                dtype = DTYPES[dt]
                key = (dt, 2 * frames, dim)
                if key not in roof_cache:
                    ff = matmul_rate(2 * frames, dim, dim * config["ff_mult"], dtype, device)
                    big = matmul_rate(2048, 2048, 2048, dtype, device)
                    roof_cache[key] = max(ff, big)
                roof = roof_cache[key]
                achieved = whole / times[dt] / 1e9
                row = {
                    "config": name,
                    "frames": frames,
                    "dtype": dt,
                    "GFLOP/step": f"{per_step / 1e9:.2f}",
                    "s/step": f"{times[dt] / args.steps:.4f}",
                    "GFLOP/s": f"{achieved:.1f}",
                    "matmul GFLOP/s": f"{roof:.1f}",
                    "fraction": f"{achieved / roof:.3f}",
                }
                if "upstream" in times:
                    row["upstream fp32 s/step"] = f"{times['upstream'] / args.steps:.4f}"
                    row["ours/upstream"] = f"{times[dt] / times['upstream']:.3f}"
                rows.append(row)
                print(table([row], list(row)), flush=True)

    columns = list(dict.fromkeys(c for r in rows for c in r))
    print(f"\nsample(): {args.steps} steps, cfg 2, sway -1, batch 1, {args.threads} threads, device {device}")
    print(table(rows, columns))


if __name__ == "__main__":
    main()
