"""One-GPU check: the CUDA path of ``sample()`` in each dtype and cache mode, and the grad modes' memory.

Usage: python benchmarks/cuda_check.py [--device cuda] [--quick]

Four tables, all measured in this one process:

1. The built-in teacher, batch of 4, 32 steps, cfg 2, sway -1, 300 frames (100 of prompt), the same
   initial noise everywhere: wall time (median of 5) and the difference from the CPU float32 output
   for float32 / bfloat16 / float16 and ``cache=True`` / ``cache=False``; also the ODE state's dtype.
2. Speed of ``sample(cache=True)`` for random-weight ``small`` and ``F5TTS_v1_Base`` configs (batch 1,
   32 steps, cfg 2): float32 vs bfloat16.
3. Backprop through ``sample(cache=False)`` for the ``small`` config at 300 frames, cfg 2: peak GPU
   memory above the model's own (``torch.cuda.max_memory_allocated``) and forward+backward time
   (median of 3) for plain / checkpoint / last-1 at 1, 8 and 32 steps, then the ratios of the
   gradient targets.
4. Gradients on the device: checkpointed vs plain backprop (float32 and bfloat16), max relative
   difference over all parameter gradients.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import CONFIGS, TEXT, randomise_, table  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dtype_table(device: torch.device, quick: bool) -> str:
    import flowtts

    model = flowtts.load("builtin")
    frames, prompt, batch, steps = (120, 40, 2, 8) if quick else (300, 100, 4, 32)
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(batch, prompt, model.num_channels, generator=g) * 2 - 5
    noise = torch.randn(batch, frames, model.num_channels, generator=g)
    texts = [TEXT[: 40 + 10 * i] for i in range(batch)]
    kwargs = dict(steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0)
    reference, _ = model.sample(cond, texts, frames, noise=noise, **kwargs)
    model.to(device)
    cond_d, noise_d = cond.to(device), noise.to(device)
    rows = []
    for name, dtype in DTYPES.items():
        if dtype == torch.float16 and device.type != "cuda":
            continue
        for cache in (True, False):
            out = {}

            def run(cache=cache, dtype=dtype, out=out):
                result, trajectory = model.sample(
                    cond_d, texts, frames, noise=noise_d, cache=cache, dtype=dtype, **kwargs
                )
                out["result"], out["trajectory"] = result, trajectory

            seconds = _median_time(run, device, repeats=2 if quick else 5)
            diff = (out["result"].float().cpu() - reference).abs()
            rows.append(
                {
                    "dtype": name,
                    "cache": cache,
                    "time (s)": f"{seconds:.3f}",
                    "max |diff| vs cpu fp32": f"{diff.max():.4f}",
                    "mean |diff|": f"{diff.mean():.5f}",
                    "output dtype": str(out["result"].dtype).replace("torch.", ""),
                    "trajectory dtype": str(out["trajectory"].dtype).replace("torch.", ""),
                    "grad_fn": out["result"].grad_fn is not None,
                }
            )
    return table(rows, list(rows[0]))


def speed_table(device: torch.device, quick: bool) -> str:
    from flowtts import CFM, DiT

    rows = []
    for config, frames in (("small", 300), ("F5TTS_v1_Base", 470)):
        if quick and config != "small":
            continue
        model = CFM(DiT(**CONFIGS[config])).eval()
        randomise_(model)
        model.to(device)
        cond = torch.randn(1, frames // 3, 100, device=device)
        times = {}
        steps = 8 if quick else 32
        kw = dict(steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=0)
        for name in ("float32", "bfloat16"):
            run = functools.partial(model.sample, cond, [TEXT], frames, dtype=DTYPES[name], **kw)
            times[name] = _median_time(run, device, repeats=2 if quick else 5)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(
            {
                "config": config,
                "params (M)": f"{params:.1f}",
                "frames": frames,
                "float32 (s)": f"{times['float32']:.3f}",
                "bfloat16 (s)": f"{times['bfloat16']:.3f}",
                "fp32/bf16": f"{times['float32'] / times['bfloat16']:.2f}",
            }
        )
        if device.type == "cuda":
            model.cpu()
            torch.cuda.empty_cache()
    return table(rows, list(rows[0]))


MODES = {"plain": {}, "checkpoint": {"grad_checkpoint": True}, "last-1": {"backprop_steps": 1}}


def grad_table(device: torch.device, quick: bool) -> str:
    from flowtts import CFM, DiT

    model = CFM(DiT(**CONFIGS["small"])).eval()
    randomise_(model)
    model.to(device)
    frames = 120 if quick else 300
    cond = torch.randn(1, frames // 3, 100, generator=torch.Generator().manual_seed(0)).to(device)
    rows, cells = [], {}
    for steps in (1, 8) if quick else (1, 8, 32):
        for mode, extra in MODES.items():
            if mode == "last-1" and steps == 1:
                continue

            def run(steps=steps, extra=extra):
                model.zero_grad(set_to_none=True)
                out, _ = model.sample(
                    cond,
                    [TEXT],
                    frames,
                    steps=steps,
                    cfg_strength=2.0,
                    sway_sampling_coef=-1.0,
                    seed=0,
                    cache=False,
                    **extra,
                )
                out.square().mean().backward()

            run()
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            run()
            peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else float("nan")
            seconds = _median_time(run, device, repeats=1 if quick else 3, warmup=0)
            cells[mode, steps] = (peak, seconds)
            rows.append(
                {
                    "mode": mode,
                    "steps": steps,
                    "peak above model (MiB)": f"{peak / 2**20:.1f}",
                    "fwd+bwd (s)": f"{seconds:.3f}",
                }
            )
    top = 8 if quick else 32
    lines = [table(rows, list(rows[0]))]
    lines.append(f"checkpoint@{top} peak / plain@1 peak = {cells['checkpoint', top][0] / cells['plain', 1][0]:.3f}")
    lines.append(
        f"checkpoint@{top} time / plain@{top} time = {cells['checkpoint', top][1] / cells['plain', top][1]:.3f}"
    )
    lines.append(f"last-1@{top} time / plain@{top} time = {cells['last-1', top][1] / cells['plain', top][1]:.3f}")
    return "\n".join(lines)


def grad_equality_table(device: torch.device, quick: bool) -> str:
    from flowtts import CFM, DiT

    model = CFM(DiT(**CONFIGS["small"])).eval()
    randomise_(model)
    model.to(device)
    cond = torch.randn(2, 40, 100, generator=torch.Generator().manual_seed(1)).to(device)
    rows = []
    for name in ("float32", "bfloat16"):
        grads = []
        for extra in ({}, {"grad_checkpoint": True}):
            model.zero_grad(set_to_none=True)
            out, _ = model.sample(
                cond,
                [TEXT, TEXT[:50]],
                120,
                steps=4,
                cfg_strength=2.0,
                seed=[0, 1],
                cache=False,
                dtype=DTYPES[name],
                **extra,
            )
            out.float().square().mean().backward()
            grads.append(torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None]))
        rel = ((grads[0] - grads[1]).abs().max() / grads[0].abs().max()).item()
        rows.append({"dtype": name, "max |g_ckpt - g_plain| / max |g_plain|": f"{rel:.2e}"})
    return table(rows, list(rows[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run on CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        print(f"device: cpu, torch {torch.__version__}")
    for title, fn in (
        ("1. built-in teacher: dtypes x cache modes", dtype_table),
        ("2. sample(cache=True) speed, random weights", speed_table),
        ("3. backprop through sample(cache=False), small config", grad_table),
        ("4. checkpointed vs plain gradients on the device", grad_equality_table),
    ):
        print(f"\n## {title}", flush=True)
        start = time.perf_counter()
        print(fn(device, args.quick))
        print(f"({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
