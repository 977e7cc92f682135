"""Time ``sample(cache=True)``, ``sample(cache=False)`` (forward only) and upstream F5-TTS's ``sample()``.

Usage: python benchmarks/sample_speed.py [--configs tiny small] [--repeats 3] [--threads 2]

Random weights, batch 1, 32 Euler steps, cfg 2, sway -1, 300 frames (100 prompt frames). Each cell is
the median of ``--repeats`` runs after one warm-up; the cells of a config run round-robin in one
process, so ratios compare like with like.
"""

from __future__ import annotations

import argparse
import functools

import torch

from _common import CONFIGS, TEXT, median_times, randomise_, table
from flowtts import CFM, DiT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"], choices=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--no-upstream", action="store_true", help="skip upstream F5-TTS even if installed")
    parser.add_argument(
        "--retain-memory",
        action="store_true",
        help="call flowtts.utils.memory.retain_freed_memory() first (what `flowtts train/distill` do)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.retain_memory:
        from flowtts.utils.memory import retain_freed_memory

        print(f"retain_freed_memory: {retain_freed_memory()}")

    upstream = None
    if not args.no_upstream:
        from upstream import load_upstream

        upstream = load_upstream()

    rows = []
    for name in args.configs:
        config = CONFIGS[name]
        ours = CFM(DiT(**config)).eval()
        randomise_(ours)
        theirs = None
        if upstream is not None:
            theirs = upstream[0](upstream[1](**config)).eval()
            theirs.load_state_dict(ours.state_dict())
        cond = torch.randn(1, 100, 100, generator=torch.Generator().manual_seed(0))
        kw = dict(steps=args.steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=0)

        prompt = (cond, [TEXT], args.frames)
        cells = {
            "cache=True": functools.partial(ours.sample, *prompt, **kw),
            "cache=False fwd": functools.partial(ours.sample, *prompt, cache=False, **kw),
        }
        if theirs is not None:
            cells["upstream"] = functools.partial(theirs.sample, *prompt, **kw)
        times = median_times(cells, args.repeats)
        params = sum(p.numel() for p in ours.parameters()) / 1e6
        row = {"config": name, "params(M)": f"{params:.1f}"}
        row.update({label: f"{t:.3f}s" for label, t in times.items()})
        row["graph/cached"] = f"{times['cache=False fwd'] / times['cache=True']:.3f}"
        if "upstream" in times:
            row["cached/upstream"] = f"{times['cache=True'] / times['upstream']:.3f}"
        rows.append(row)
        print(table([row], list(row)), flush=True)

    columns = list(dict.fromkeys(c for r in rows for c in r))
    allocator = "freed memory retained" if args.retain_memory else "default glibc allocator"
    print(f"\nsample() medians, {args.steps} steps, cfg 2, {args.frames} frames, {args.threads} threads, {allocator}")
    print(table(rows, columns))
    for r in rows:
        line = f"{r['config']}: cache=False/cache=True={r['graph/cached']}"
        if "cached/upstream" in r:
            line += f" cache=True/upstream={r['cached/upstream']}"
        print(line)


if __name__ == "__main__":
    main()
