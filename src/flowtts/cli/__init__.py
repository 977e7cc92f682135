"""Command line: ``flowtts <command> ...`` (``flowtts <command> --help`` for each).

One module per group of commands, each with its handlers and the ``add_*`` functions that register
their options; this module only assembles the parser and reports user errors.
"""

from __future__ import annotations

import argparse
import logging
import sys

from flowtts.cli import app, demo, evaluate, models, prefs, recognizer, speak, training, vocoder
from flowtts.cli.common import UserError, check_machine_flags

__all__ = ["UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``flowtts`` parser with every command."""
    parser = argparse.ArgumentParser(prog="flowtts", description="F5-TTS-compatible flow-matching TTS")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        demo.add_demo,
        speak.add_infer,
        speak.add_edit,
        models.add_average,
        models.add_export,
        speak.add_serve,
        app.add_app,
        models.add_info,
        evaluate.add_eval,
        training.add_data,
        training.add_train,
        training.add_distill,
        training.add_reward,
        recognizer.add_asr,
        vocoder.add_vocoder,
        prefs.add_prefs,
        prefs.add_rate,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="flowtts: %(message)s")
    try:
        check_machine_flags(args)
        return args.func(args)
    except (UserError, FileNotFoundError, FileExistsError, ValueError, ImportError) as exc:
        print(f"flowtts {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
