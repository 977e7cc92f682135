"""Distance to teacher@32 of a distilled student and of two teacher baselines, on held-out prompts.

Usage: python benchmarks/distill_quality.py --teacher builtin --student builtin:student \
           --heldout corpus/heldout [--prompts 16] [--layout prefix|pair|unprompted] [--student-steps 4]

Held-out prompts and their noises are fixed by ``--seed``: ``--layout prefix`` (the leading 20-50 % of each
utterance, its transcript and length) or ``--layout pair`` (each row as the reference clip, the next row's
text said after it in the next row's recorded length: inference continuing a clip) or ``--layout unprompted``
(each row's text said with no audio prompt in its recorded length: inference with ``--no-continue-reference``,
as the built-in files ask).
Prints the table of ``flowtts.train.distill.evaluate`` and, as its last line,
``student/naive=R1 student/epss7=R2 student_nfe=N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import torch

import flowtts
from flowtts.infer import recommended_options
from flowtts.train.data import MelDataset
from flowtts.train.distill import DistillConfig, evaluate, report
from flowtts.train.prompts import fixed_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="builtin")
    parser.add_argument("--student", default="builtin:student")
    parser.add_argument("--heldout", required=True, help="prepared held-out dataset directory")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument(
        "--layout", choices=["prefix", "pair", "unprompted"], default="prefix", help="kind of held-out prompts"
    )
    parser.add_argument("--student-steps", type=int, help="default: what the student was distilled for (else 4)")
    parser.add_argument("--student-cfg", type=float, help="default: the student's own (else 0)")
    parser.add_argument(
        "--student-grid", choices=["uniform", "epss", "sway"], help="default: the student's own (with its times)"
    )
    parser.add_argument(
        "--also", nargs="*", default=[], help="more students, each sampled with its recorded settings (extra rows)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="where report.txt/report.png go (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    teacher, student = flowtts.load(args.teacher), flowtts.load(args.student)
    raw = (getattr(student, "metadata", None) or {}).get("distill_config")
    recorded = DistillConfig.from_json(raw) if raw else DistillConfig()
    # Only the student's sampling settings matter here; the rest are DistillConfig's defaults.
    sampling = ("student_steps", "student_cfg", "student_grid", "student_sway", "student_times")
    config = DistillConfig(**{k: getattr(recorded, k) for k in sampling})
    if args.student_steps or args.student_grid:  # a recorded custom grid fits neither another grid nor step count
        grid = args.student_grid or ("uniform" if config.student_grid == "custom" else config.student_grid)
        steps = args.student_steps or config.student_steps
        config = dataclasses.replace(config, student_steps=steps, student_grid=grid, student_times=None)
    if args.student_cfg is not None:
        config = dataclasses.replace(config, student_cfg=args.student_cfg)
    held = MelDataset(args.heldout)
    prompt_rows = list(range(min(args.prompts, len(held))))
    prompts = fixed_prompts(held, prompt_rows, args.layout, teacher.num_channels, config, seed=args.seed)
    # The teacher on the student's own grid: what the grid alone gives, so the student must beat it too.
    n = config.student_steps
    own_grid = {**config.student_sampling(), "cfg_strength": config.teacher_cfg}
    extra = {f"teacher@{n} (student's grid, cfg {config.teacher_cfg:g})": (teacher, own_grid)}
    for spec in args.also:
        other = flowtts.load(spec)
        kwargs = recommended_options(other).solver_kwargs()
        extra[f"{spec} ({kwargs['steps']} steps, cfg {kwargs['cfg_strength']:g})"[-42:]] = (other, kwargs)
    rows, mels = evaluate(teacher, student, prompts, config, extra=extra)
    source = f"{len(prompt_rows)} {args.layout} prompts, rows 0-{len(prompt_rows) - 1} of {args.heldout}"
    print(report(rows, mels, args.out or tempfile.mkdtemp(prefix="distill-report-"), source))


if __name__ == "__main__":
    main()
