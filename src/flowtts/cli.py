"""Command line: ``flowtts <command> ...``."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from flowtts.demo import run_demo

    run_demo(steps=args.steps, seed=args.seed, threads=args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtts", description="F5-TTS-compatible flow-matching TTS")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sample a small model with cache=True and cache=False and report")
    demo.add_argument("--steps", type=int, default=16)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None)
    demo.set_defaults(func=_demo)
    return parser


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit status 2, no traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, FileNotFoundError, ValueError) as exc:
        print(f"flowtts {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
