"""``flowtts prefs train``: fit a reward model to preference pairs and say how well it ranks held-out pairs."""

from __future__ import annotations

import argparse

from flowtts.cli.common import UserError, seed

# flowtts.prefs.model.FEATURES, written out so that building the parser imports no torch (a test keeps them equal)
FEATURE_CHOICES = ("recognizer+stats", "recognizer", "stats")
LIBRARY = "default: flowtts.train.prefs.train_preference_model's"


def _prefs_train(args: argparse.Namespace) -> int:
    if not 0 < args.heldout_fraction < 1:
        raise UserError(f"--heldout-fraction must lie in (0, 1), got {args.heldout_fraction}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    if not args.out.endswith(".safetensors"):
        raise UserError(f"--out must be a .safetensors file, got {args.out!r}")

    from flowtts.train.prefs import train_preference_model

    options = {k: getattr(args, k) for k in ("steps", "lr") if getattr(args, k) is not None}
    summary = train_preference_model(
        args.pairs,
        args.out,
        features=args.features,
        feature_source=f"recognizer:{args.recognizer}",
        heldout_fraction=args.heldout_fraction,
        seed=args.seed,
        **options,
    )
    judged = "people" if summary["human"] else f"machine-judged ({', '.join(summary['judges'])})"
    print(
        f"{summary['pairs']} pairs, {judged}, {summary['same_pairs']} 'same': train accuracy "
        f"{summary['train_accuracy']:.3f} ({summary['train_pairs']} pairs), held-out accuracy "
        f"{summary['heldout_accuracy']:.3f} ({summary['heldout_pairs']} pairs); reward model in {summary['path']}"
    )
    return 0


def add_prefs_train(prefs_sub) -> None:
    """Register ``train`` under ``flowtts prefs`` (``prefs_sub``: the group's subparsers)."""
    tr = prefs_sub.add_parser(
        "train",
        help="fit a reward model to preference pairs (Bradley-Terry) and report its held-out accuracy",
        description="Fit a small reward model on frozen features of the generated frames (the recogniser's hidden "
        "states and mel statistics) to preference pairs, and report how often it ranks held-out pairs as they "
        "were judged. 'same' pairs pull both scores together and are left out of the accuracy.",
    )
    tr.add_argument("--pairs", nargs="+", required=True, metavar="FILE", help="preferences files (JSON lines)")
    tr.add_argument("--out", required=True, metavar="FILE.safetensors", help="where the reward model goes")
    tr.add_argument("--heldout-fraction", type=float, default=0.2, help="share of pairs held out (default 0.2)")
    tr.add_argument("--steps", type=int, help=f"full-batch optimiser steps on the head ({LIBRARY})")
    tr.add_argument("--lr", type=float, help=f"learning rate ({LIBRARY})")
    tr.add_argument("--seed", type=seed, default=0, help="seeds the held-out split and the head (default 0)")
    tr.add_argument(
        "--features", choices=FEATURE_CHOICES, default="recognizer+stats", help="what the head reads (default: both)"
    )
    tr.add_argument(
        "--recognizer", default="builtin", help="recogniser file whose hidden states are features (default: built-in)"
    )
    tr.set_defaults(func=_prefs_train)
