"""Memory and time of backprop through ``sample(cache=False)``: plain vs checkpoint vs last-K.

Usage: python benchmarks/grad_memory.py [--config small] [--steps 1 2 4 8 16 32] [--processes 3] [--repeats 1]

For each grad mode and step count, ``--processes`` fresh Python processes (so peak RSS belongs to
that cell alone) build the model (random weights, 300 frames, 100 prompt frames, cfg 2, batch 1) and
measure:

* saved: bytes the forward pass stores for backward, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` over distinct storages, parameters excluded (the
  memory backprop holds on to);
* peak RSS of the process after forward+backward: median over the processes, with their range
  (glibc's heap makes it vary by tens of MiB from one fresh process to the next);
* forward+backward wall time, median of all processes' ``--repeats`` runs.

It ends with the ratios the targets are stated in.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import CONFIGS, TEXT, randomise_, table  # noqa: E402

MODES = {
    "plain": dict(),
    "checkpoint": dict(grad_checkpoint=True),
    "last-1": dict(backprop_steps=1),
}


def run_cell(config: str, mode: str, steps: int, frames: int, repeats: int, threads: int, retain: bool) -> dict:
    from flowtts import CFM, DiT

    if retain:
        from flowtts.utils.memory import retain_freed_memory

        retain_freed_memory()
    torch.set_num_threads(threads)
    model = CFM(DiT(**CONFIGS[config])).eval()
    randomise_(model)
    cond = torch.randn(1, 100, 100, generator=torch.Generator().manual_seed(0))
    kwargs = dict(steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=0, cache=False, **MODES[mode])
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_storages:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = model.sample(cond, [TEXT], frames, **kwargs)
    saved = sum(seen.values())
    out[:, 100:].pow(2).mean().backward()
    del out

    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out, _ = model.sample(cond, [TEXT], frames, **kwargs)
        out[:, 100:].pow(2).mean().backward()
        times.append(time.perf_counter() - start)
        del out
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"saved_bytes": saved, "peak_rss_bytes": peak_kib * 1024, "times": times}


def measure(args: argparse.Namespace, mode: str, steps: int) -> tuple[dict, list[int]]:
    """One cell measured in ``--processes`` fresh processes: the medians, and each process's peak RSS."""
    cmd = [sys.executable, __file__, "--config", args.config, "--frames", str(args.frames)]
    cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads), "--cell", mode, str(steps)]
    if args.retain_memory:
        cmd.append("--retain-memory")
    runs = []
    for _ in range(args.processes):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rss = [r["peak_rss_bytes"] for r in runs]
    cell = {
        "saved_bytes": runs[0]["saved_bytes"],  # deterministic: the same in every process
        "peak_rss_bytes": statistics.median(rss),
        "seconds": statistics.median([t for r in runs for t in r["times"]]),
    }
    return cell, rss


def print_ratios(results: dict[tuple[str, int], dict], top: int) -> None:
    def ratio(a, b, key):
        if a in results and b in results:
            return results[a][key] / results[b][key]
        return float("nan")

    print(
        f"checkpoint@{top} saved / plain@1 saved = {ratio(('checkpoint', top), ('plain', 1), 'saved_bytes'):.3f}\n"
        f"plain@{top} saved / plain@1 saved = {ratio(('plain', top), ('plain', 1), 'saved_bytes'):.1f}\n"
        f"checkpoint@{top} peak RSS / plain@1 peak RSS = "
        f"{ratio(('checkpoint', top), ('plain', 1), 'peak_rss_bytes'):.3f}\n"
        f"checkpoint@{top} time / plain@{top} time = {ratio(('checkpoint', top), ('plain', top), 'seconds'):.3f}\n"
        f"last-1@{top} time / plain@{top} time = {ratio(('last-1', top), ('plain', top), 'seconds'):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per cell")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per process (after one untimed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--retain-memory", action="store_true", help="cells call retain_freed_memory() (as `flowtts train` does)"
    )
    parser.add_argument("--cell", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.cell:
        mode, steps = args.cell[0], int(args.cell[1])
        cell = run_cell(args.config, mode, steps, args.frames, args.repeats, args.threads, args.retain_memory)
        print(json.dumps(cell))
        return

    results: dict[tuple[str, int], dict] = {}
    rows = []
    for steps in args.steps:
        for mode in args.modes:
            if mode == "last-1" and steps == 1:
                continue  # identical to plain
            cell, rss = measure(args, mode, steps)
            results[(mode, steps)] = cell
            row = {
                "mode": mode,
                "steps": steps,
                "saved (MiB)": f"{cell['saved_bytes'] / 2**20:.1f}",
                "peak RSS (MiB)": f"{cell['peak_rss_bytes'] / 2**20:.0f}",
                "RSS range": f"{min(rss) / 2**20:.0f}-{max(rss) / 2**20:.0f}",
                "fwd+bwd (s)": f"{cell['seconds']:.2f}",
            }
            rows.append(row)
            print(table([row], list(row)), flush=True)

    allocator = "freed memory retained" if args.retain_memory else "default glibc allocator"
    print(
        f"\n{args.config} config, {args.frames} frames, cfg 2, {args.threads} threads, "
        f"{args.processes} fresh processes per cell x {args.repeats} timed runs (medians), {allocator}"
    )
    print(table(rows, list(rows[0])))
    print_ratios(results, max(args.steps))


if __name__ == "__main__":
    main()
