"""``flowtts app``: the local web app."""

from __future__ import annotations

import argparse

from flowtts.cli.common import UserError, add_quantize_option


def _app(args: argparse.Namespace) -> int:
    if args.share:
        raise UserError(
            "--share makes a public link through Gradio's servers, which needs the internet; "
            "flowtts app serves offline (use --host 0.0.0.0 to reach it from your network)"
        )
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("flowtts app needs Gradio: pip install 'flowtts[app]'") from None
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from flowtts.app.ui import build_app, launch

    app = build_app(args.model, quantize=args.quantize, concurrency=args.concurrency)
    app.flowtts_store.get(args.model)  # load the default model once, before the first request
    print(f"flowtts app on http://{args.host}:{args.port}{args.root_path or ''}")
    launch(app, args.host, args.port, inbrowser=args.inbrowser, root_path=args.root_path)
    return 0


def add_app(sub) -> None:
    ap = sub.add_parser("app", help="the web app: speak, multi-voice, edit, compare, train (offline)")
    ap.add_argument("--model", default="builtin", help="model the page starts with (default: builtin)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--inbrowser", action="store_true", help="open the page in a browser")
    ap.add_argument("--root-path", help="URL prefix when served behind a proxy")
    ap.add_argument("--share", action="store_true", help="refused: it needs the internet")
    ap.add_argument("--concurrency", type=int, default=2, help="requests run at once (the rest are queued)")
    add_quantize_option(ap)
    ap.add_argument("--threads", type=int)
    ap.set_defaults(func=_app)
