"""``flowtts distill --method progressive|consistency|adversarial|dmd``: the few-step methods' options and run.

``--method trajectory`` (the default) is the sampler-through distillation of :mod:`flowtts.cli.training`;
the other methods share its teacher, data, loop and report options and add their own below.
"""

from __future__ import annotations

import argparse

from flowtts.cli.common import UserError

METHOD_CHOICES = ("trajectory", "progressive", "consistency", "adversarial", "dmd")
# Options of --method trajectory only: (dest, its value when not given, flag)
TRAJECTORY_ONLY = (
    ("velocity_steps", 0, "--velocity-steps"),
    ("segment_steps", 0, "--segment-steps"),
    ("segment_start", "teacher", "--segment-start"),
    ("teacher_pool", 0, "--teacher-pool"),
    ("learn_times", False, "--learn-times"),
    ("keep_guidance", False, "--keep-guidance"),
    ("student_times", None, "--student-times"),
    ("grad_checkpoint", False, "--grad-checkpoint"),
    ("backprop_steps", None, "--backprop-steps"),
    ("eval_every", 0, "--eval-every"),
)


def add_method_options(ds: argparse.ArgumentParser) -> None:
    """``--method`` and the few-step methods' own options."""
    ds.add_argument(
        "--method",
        choices=METHOD_CHOICES,
        default="trajectory",
        help="trajectory: the student's whole few-step solve matched to the teacher's sample (default); "
        "progressive: rounds halving the steps from --rounds-from down to --student-steps; consistency: a "
        "consistency model along the guided teacher's trajectories; adversarial: ADD (a discriminator on the "
        "frozen teacher's features plus a distillation term); dmd: distribution matching (DMD2) with an online "
        "fake model. See docs/few_step_methods.md",
    )
    group = ds.add_argument_group("few-step methods (--method other than trajectory)")
    group.add_argument("--rounds-from", type=int, default=32, help="progressive: the first teacher's steps")
    group.add_argument("--steps-per-round", type=int, default=100, help="progressive: optimiser steps per round")
    group.add_argument("--intervals", type=int, default=32, help="consistency: lattice of training times")
    group.add_argument("--skip", type=int, default=4, help="consistency: lattice intervals the teacher solves")
    group.add_argument("--teacher-substeps", type=int, default=4, help="consistency: teacher steps per skip")
    group.add_argument("--target-decay", type=float, default=0.95, help="consistency: EMA decay of the target")
    group.add_argument("--adv-loss", choices=["hinge", "ls"], default="hinge", help="adversarial: GAN loss")
    group.add_argument("--distill-weight", type=float, default=2.5, help="adversarial: distillation term weight")
    group.add_argument("--r1-weight", type=float, default=1e-3, help="adversarial: R1 penalty on real features")
    group.add_argument("--adv-warmup", type=int, default=0, help="adversarial: steps on the distillation term alone")
    group.add_argument("--d-updates", type=int, default=1, help="adversarial: discriminator updates per step")
    group.add_argument(
        "--feature-layers", type=_layers, default=(-1,), help="adversarial: teacher blocks the heads read (e.g. 2,-1)"
    )
    group.add_argument("--read-mel", action="store_true", help="adversarial: the heads also read the mel")
    group.add_argument("--fake-updates", type=int, default=2, help="dmd: fake-model updates per generator update")
    group.add_argument("--aux-lr", type=float, default=1e-4, help="dmd/adversarial: the second network's rate")


def _layers(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices, got {value!r}") from None


def method_config(args: argparse.Namespace, loop):
    """The :class:`~flowtts.train.fewstep.run.FewStepConfig` the command line asks for.

    Raises:
        UserError: A trajectory-only option given, or a grid the method cannot sample with.
    """
    from flowtts.train.fewstep.run import FewStepConfig

    given = [flag for dest, unset, flag in TRAJECTORY_ONLY if getattr(args, dest, unset) != unset]
    if args.ctc_weight and args.method != "dmd":
        given.append("--ctc-weight")
    if given:
        raise UserError(
            f"{', '.join(given)} belong(s) to --method trajectory (--ctc-weight: also dmd), not --method {args.method}"
        )
    if args.student_grid not in ("uniform", "sway"):
        raise UserError(
            f"--method {args.method} samples on a uniform or sway grid, got --student-grid {args.student_grid}"
        )
    sway = -1.0 if args.student_grid == "sway" else None
    return FewStepConfig(
        method=args.method,
        settings=_settings(args, sway),
        loop=loop,
        batch_size=args.batch_size,
        prompts=args.prompts,
        aux_lr=args.aux_lr,
        dtype=args.dtype,
        seed=args.seed,
        recognizer=args.recognizer,
    )


def _settings(args: argparse.Namespace, sway: float | None):
    """The method's settings from the command line."""
    from flowtts.train.fewstep.adversarial import AdversarialSettings
    from flowtts.train.fewstep.consistency import ConsistencySettings
    from flowtts.train.fewstep.dmd import DMDSettings
    from flowtts.train.fewstep.progressive import ProgressiveSettings

    steps, cfg = args.student_steps, args.teacher_cfg
    if args.method == "progressive":
        return ProgressiveSettings(
            start_steps=args.rounds_from, end_steps=steps, steps_per_round=args.steps_per_round, teacher_cfg=cfg,
            sway_coef=sway,
        )  # fmt: skip
    if args.method == "consistency":
        return ConsistencySettings(
            intervals=args.intervals, skip=args.skip, teacher_substeps=args.teacher_substeps, teacher_cfg=cfg,
            target_decay=args.target_decay, sample_steps=steps, sway_coef=sway,
        )  # fmt: skip
    if args.method == "adversarial":
        return AdversarialSettings(
            loss=args.adv_loss, student_steps=steps, distill_weight=args.distill_weight, r1_weight=args.r1_weight,
            warmup_steps=args.adv_warmup, d_updates_per_g=args.d_updates, feature_layers=args.feature_layers,
            read_mel=args.read_mel, teacher_cfg=cfg, sway_coef=sway,
        )  # fmt: skip
    return DMDSettings(
        student_steps=steps, sampler="ode", teacher_cfg=cfg, fake_updates_per_generator=args.fake_updates,
        sway_coef=sway, ctc_weight=args.ctc_weight,
    )  # fmt: skip


def run(args: argparse.Namespace, loop, teacher, student, dataset, held) -> int:
    """Train with ``args.method``, then (unless ``--report-prompts 0``) the distance report on held-out prompts."""
    import dataclasses

    from flowtts.checkpoints.loader import load
    from flowtts.sampling.recipe import SamplingRecipe
    from flowtts.train.distill_config import DistillConfig
    from flowtts.train.distill_report import evaluate, report
    from flowtts.train.fewstep.run import distill_fewstep
    from flowtts.train.prompts import fixed_prompts

    config = method_config(args, loop)
    report_rows = list(range(min(args.report_prompts, len(held))))
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    summary = distill_fewstep(
        teacher, student, dataset, config, args.out, progress=not args.quiet, max_seconds=max_seconds
    )
    print(
        f"distilled ({args.method}) {summary['step']} steps in {summary['seconds']:.0f} s, "
        f"last loss {summary['loss']:.5f}"
    )
    if not report_rows:
        return 0
    final = load(f"{args.out}/student.safetensors")
    recorded = DistillConfig(
        teacher=SamplingRecipe(steps=args.teacher_steps, cfg_strength=args.teacher_cfg),
        student=SamplingRecipe.from_metadata(final.metadata),
        prompts=args.prompts,
    )
    prompts = fixed_prompts(held, report_rows, args.prompts, teacher.num_channels, recorded, seed=0)
    rows, mels = evaluate(teacher, final, prompts, dataclasses.replace(recorded))
    source = f"{len(report_rows)} {args.prompts} prompts, rows 0-{len(report_rows) - 1} of {held.directory}"
    print(report(rows, mels, args.out, source))
    return 0
