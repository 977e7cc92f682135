"""Distance to teacher@32 of a distilled student and of two teacher baselines, on held-out prompts.

Usage: python benchmarks/distill_quality.py --teacher builtin --student builtin:student \
           --heldout corpus/heldout [--prompts 16] [--layout prefix|pair|unprompted] [--student-steps 4]

Held-out prompts and their noises are fixed by ``--seed``: ``--layout prefix`` (the leading 20-50 % of each
utterance, its transcript and length) or ``--layout pair`` (each row as the reference clip, the next row's
text said after it in the next row's recorded length: inference continuing a clip) or ``--layout unprompted``
(each row's text said with no audio prompt in its recorded length: inference with ``--no-continue-reference``,
as the built-in files ask).
Prints the table of ``flowtts.train.distill_report.evaluate`` and, as its last line,
``student/naive=R1 student/epss7=R2 student_nfe=N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import torch

import flowtts
from flowtts.sampling.recipe import SamplingRecipe
from flowtts.synthesis import recommended_options
from flowtts.train.data import MelDataset
from flowtts.train.distill_config import DEFAULT_STUDENT, DistillConfig, student_recipe
from flowtts.train.distill_report import evaluate, report
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
    # Only the student's recipe matters here (the recorded one, else DistillConfig's default); the rest are
    # DistillConfig's defaults.
    mine = SamplingRecipe.from_metadata(getattr(student, "metadata", None)) or DEFAULT_STUDENT
    if args.student_steps or args.student_grid:  # a recorded custom grid fits neither another grid nor step count
        grid = args.student_grid or ("uniform" if mine.grid == "custom" else mine.grid)
        sway = mine.sway_sampling_coef if mine.sway_sampling_coef is not None else -1.0
        mine = student_recipe(args.student_steps or mine.steps, grid, mine.cfg_strength, sway=sway)
    if args.student_cfg is not None:
        mine = dataclasses.replace(mine, cfg_strength=args.student_cfg)
    config = DistillConfig(student=mine)
    held = MelDataset(args.heldout)
    prompt_rows = list(range(min(args.prompts, len(held))))
    prompts = fixed_prompts(held, prompt_rows, args.layout, teacher.num_channels, config, seed=args.seed)
    # The teacher on the student's own grid: what the grid alone gives, so the student must beat it too.
    n, cfg = config.student.steps, config.teacher.cfg_strength
    own_grid = config.student.with_overrides(cfg_strength=cfg).sample_kwargs()
    extra = {f"teacher@{n} (student's grid, cfg {cfg:g})": (teacher, own_grid)}
    for spec in args.also:
        other = flowtts.load(spec)
        sample_kwargs = recommended_options(other).solver_kwargs()
        label = f"{spec} ({sample_kwargs['steps']} steps, cfg {sample_kwargs['cfg_strength']:g})"
        extra[label[-42:]] = (other, sample_kwargs)
    rows, mels = evaluate(teacher, student, prompts, config, extra=extra)
    source = f"{len(prompt_rows)} {args.layout} prompts, rows 0-{len(prompt_rows) - 1} of {args.heldout}"
    print(report(rows, mels, args.out or tempfile.mkdtemp(prefix="distill-report-"), source))


if __name__ == "__main__":
    main()
