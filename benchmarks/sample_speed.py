"""Sampling speed side by side: upstream F5-TTS float32, flowtts float32, int8 and bfloat16, the built-in
student at its own steps, and ``flowtts infer`` end to end.

Usage: python benchmarks/sample_speed.py [--configs small F5TTS_v1_Base] [--frames 300 470] [--steps 32]
       [--repeats 3] [--threads 2] [--no-upstream] [--differentiable]

Random weights (std 0.02), batch 1, cfg 2, sway -1, 100 prompt frames. Each cell is the median of
``--repeats`` runs after one warm-up; the cells of a row run round-robin in one process, so the ratios
compare like with like. RTF is seconds of compute per second of generated audio (24 kHz, hop 256).
The last two tables use the built-in student (its recorded recipe, 4 network calls) in float32 and int8:
``sample()`` alone, then text to wav with the vocoder as ``flowtts infer`` runs it.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time

import torch

from _common import CONFIGS, TEXT, median_times, randomise_, table
from flowtts import CFM, DiT
from flowtts.model.quantize import choose_engine, has_amx_int8, quantize

HOP_SECONDS = 256 / 24_000
STUDENT_TEXT = "My mother lost the black umbrella in the garden, and my brother found it near the old red door."
PROMPT = 100


def rtf(seconds: float, frames: int) -> str:
    return f"{seconds / ((frames - PROMPT) * HOP_SECONDS):.3f}"


def config_rows(args, upstream) -> list[dict]:
    rows = []
    for name in args.configs:
        ours = CFM(DiT(**CONFIGS[name])).eval()
        randomise_(ours)
        int8 = quantize(ours)
        theirs = None
        if upstream is not None:
            theirs = upstream[0](upstream[1](**CONFIGS[name])).eval()
            theirs.load_state_dict(ours.state_dict())
        cond = torch.randn(1, PROMPT, 100, generator=torch.Generator().manual_seed(0))
        kw = dict(steps=args.steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=0)
        for frames in args.frames:
            prompt = (cond, [TEXT], frames)
            cells = {}
            if theirs is not None:
                cells["upstream fp32"] = functools.partial(theirs.sample, *prompt, **kw)
            cells["fp32"] = functools.partial(ours.sample, *prompt, **kw)
            cells["int8"] = functools.partial(int8.sample, *prompt, **kw)
            if not args.no_bf16:
                cells["bf16"] = functools.partial(ours.sample, *prompt, dtype="bfloat16", **kw)
            if args.differentiable:
                cells["cache=False fwd"] = functools.partial(ours.sample, *prompt, cache=False, **kw)
            times = median_times(cells, args.repeats)
            baseline = times.get("upstream fp32", times["fp32"])
            base_name = "upstream" if "upstream fp32" in times else "fp32"
            row = {"config": name, "params(M)": f"{sum(p.numel() for p in ours.parameters()) / 1e6:.1f}"}
            row["frames"] = frames
            for label, t in times.items():
                row[label] = f"{t:.3f}s"
            row["RTF int8"] = rtf(times["int8"], frames)
            row[f"RTF {base_name}"] = rtf(baseline, frames)
            for label in ("fp32", "int8", "bf16"):
                if label in times:
                    row[f"{base_name}/{label}"] = f"{baseline / times[label]:.2f}x"
            rows.append(row)
            print(table([row], list(row)), flush=True)
    return rows


def student_rows(args) -> tuple[list[dict], list[dict]]:
    import flowtts
    from flowtts.sampling.recipe import SamplingRecipe

    student = flowtts.load("builtin:student")
    int8 = quantize(student)
    kw = SamplingRecipe.for_model(student).sample_kwargs()
    cond = torch.randn(1, PROMPT, 100, generator=torch.Generator().manual_seed(0))
    rows = []
    for frames in args.frames:
        prompt = (cond, [STUDENT_TEXT], frames)
        times = median_times(
            {
                "fp32": functools.partial(student.sample, *prompt, seed=0, **kw),
                "int8": functools.partial(int8.sample, *prompt, seed=0, **kw),
            },
            args.repeats,
        )
        rows.append(
            {
                "model": "builtin:student",
                "frames": frames,
                "fp32": f"{times['fp32']:.3f}s",
                "int8": f"{times['int8']:.3f}s",
                "RTF fp32": rtf(times["fp32"], frames),
                "RTF int8": rtf(times["int8"], frames),
                "fp32/int8": f"{times['fp32'] / times['int8']:.2f}x",
            }
        )
    e2e = []
    with tempfile.TemporaryDirectory() as tmp:
        engines = {}
        for label, quant in (("fp32", None), ("int8", "int8")):
            engines[label] = flowtts.F5TTS("builtin:student", device="cpu", quantize=quant)
        audio = {}

        def speak(label):
            wave, rate, _ = engines[label].infer(
                None,
                "",
                STUDENT_TEXT,
                seed=0,
                progress=False,
                show_info=None,
                file_wave=os.path.join(tmp, f"{label}.wav"),
            )
            audio[label] = len(wave) / rate

        times = median_times({label: functools.partial(speak, label) for label in engines}, args.repeats)
        for label, t in times.items():
            e2e.append(
                {
                    "flowtts infer (builtin:student)": label,
                    "text to wav": f"{t:.3f}s",
                    "audio": f"{audio[label]:.2f}s",
                    "RTF": f"{t / audio[label]:.3f}",
                }
            )
    return rows, e2e


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "F5TTS_v1_Base"], choices=sorted(CONFIGS))
    parser.add_argument("--frames", nargs="+", type=int, default=[300, 470])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--no-upstream", action="store_true", help="skip upstream F5-TTS even if installed")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 autocast column")
    parser.add_argument("--no-student", action="store_true", help="skip the built-in student's tables")
    parser.add_argument("--differentiable", action="store_true", help="add sample(cache=False) (forward only)")
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
    print(
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"AMX int8: {has_amx_int8()}, int8 engine: {choose_engine()}, {args.threads} threads",
        flush=True,
    )
    start = time.perf_counter()
    rows = config_rows(args, upstream)
    print(f"\nsample() medians, {args.steps} steps, cfg 2, batch 1, {args.threads} threads")
    print(table(rows, list(dict.fromkeys(c for r in rows for c in r))))
    if not args.no_student:
        student, e2e = student_rows(args)
        print("\nbuilt-in student, its own recipe (4 network calls)")
        print(table(student, list(student[0])))
        print()
        print(table(e2e, list(e2e[0])))
    for r in rows:
        ratios = " ".join(f"{k}={v}" for k, v in r.items() if "/" in k)
        print(f"{r['config']} {r['frames']} frames: {ratios}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
