"""``flowtts app``: the local web app."""

from __future__ import annotations

import argparse

from flowtts.cli.common import UserError, add_quantize_option, add_sampling_flags


def _limits(args: argparse.Namespace):
    from flowtts.app.limits import Limits

    given = {
        name: getattr(args, name) for name in ("max_text", "max_seconds", "max_models", "max_runs", "max_upload_mb")
    }
    return Limits(**{name: value for name, value in given.items() if value is not None})


def _app(args: argparse.Namespace) -> int:
    if args.share:
        raise UserError(
            "--share makes a public link through Gradio's servers, which needs the internet; "
            "flowtts app serves offline (use --host 0.0.0.0 with --auth to reach it from your network)"
        )
    from flowtts.app.access import check_exposure, read_credentials

    credentials = read_credentials(args.auth, args.auth_file)
    check_exposure(args.host, credentials)
    limits = _limits(args)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("flowtts app needs Gradio: pip install 'flowtts[app]'") from None
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from flowtts.app.ui import build_app, serve

    app = build_app(
        args.model, quantize=args.quantize, concurrency=args.concurrency, workspace=args.workspace, limits=limits
    )
    app.flowtts_store.vocoder = args.vocoder or "auto"  # checked with the machine flags (cli.common)
    app.flowtts_store.get(args.model)  # load the default model once, before the first request
    where = f"http://{args.host}:{args.port}{args.root_path or ''}"
    print(f"flowtts app on {where}, workspace {app.flowtts_workspace.root}")
    serve(app, args.host, args.port, inbrowser=args.inbrowser, root_path=args.root_path, auth=credentials)
    return 0


def add_app(sub) -> None:
    ap = sub.add_parser("app", help="the web app: speak, multi-voice, edit, compare, train (offline)")
    ap.add_argument("--model", default="builtin", help="model the page starts with (default: builtin)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--auth", metavar="USER:PASSWORD", help="login for the page (needed for a non-loopback --host)")
    ap.add_argument("--auth-file", help="logins for the page, one USER:PASSWORD a line (kept out of `ps`)")
    ap.add_argument(
        "--workspace",
        help="the folder the page's paths lie in; nothing outside it is read or written "
        "(default: ./flowtts_workspace, made on first use)",
    )
    ap.add_argument("--max-runs", type=int, help="training processes at once (default: 1)")
    ap.add_argument("--max-text", type=int, help="characters of text per request (default: 2000)")
    ap.add_argument("--max-seconds", type=float, help="seconds of work per request, then stopped (default: 300)")
    ap.add_argument("--max-models", type=int, help="models kept loaded, least recently used dropped (default: 3)")
    ap.add_argument("--max-upload-mb", type=int, help="size of one uploaded file in MB (default: 2048)")
    ap.add_argument("--inbrowser", action="store_true", help="open the page in a browser")
    ap.add_argument("--root-path", help="URL prefix when served behind a proxy")
    ap.add_argument("--share", action="store_true", help="refused: it needs the internet")
    ap.add_argument("--concurrency", type=int, default=2, help="requests run at once (the rest are queued)")
    add_quantize_option(ap)
    add_sampling_flags(ap, ("vocoder",))
    ap.add_argument("--threads", type=int)
    ap.set_defaults(func=_app)
