"""``flowtts demo``: the main job on the built-in models."""

from __future__ import annotations

import argparse

from flowtts.cli.common import UserError, seed


def _demo(args: argparse.Namespace) -> int:
    from flowtts.demo import run_demo

    if args.distill_seconds < 0:
        raise UserError(f"--distill-seconds must be >= 0, got {args.distill_seconds}")
    run_demo(out_dir=args.out, distill_seconds=args.distill_seconds, seed=args.seed, threads=args.threads)
    return 0


def add_demo(sub) -> None:
    """Register ``demo``."""
    demo = sub.add_parser(
        "demo", help="the main job on the built-in models: synthesise, distil a student for a few minutes, report"
    )
    demo.add_argument("--out", default="flowtts_demo", help="where the wavs, report and distillation run go")
    demo.add_argument("--distill-seconds", type=float, default=150.0, help="wall time of the fresh distillation")
    demo.add_argument("--seed", type=seed, default=0)
    demo.add_argument("--threads", type=int, default=None)
    demo.set_defaults(func=_demo)
