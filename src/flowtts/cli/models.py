"""``flowtts average``, ``export`` and ``info``: model files."""

from __future__ import annotations

import argparse
import os
import sys

from flowtts.cli.common import (
    DTYPE_CHOICES,
    UserError,
    add_architecture_options,
    load_model,
    numbers,
    resolve_checkpoint,
)


def _average(args: argparse.Namespace) -> int:
    import json

    from flowtts.checkpoints.average import average
    from flowtts.checkpoints.loader import load, save

    if os.path.isdir(args.output):
        example = os.path.join(args.output, "soup.safetensors")
        raise UserError(f"-o {args.output} is a folder; give the file to write, e.g. {example}")
    if not args.output.endswith(".safetensors"):
        raise UserError(
            f"-o {args.output}: the averaged model is a .safetensors file (flowtts.load reads it by that name)"
        )
    if os.path.exists(args.output) and not args.force:
        raise UserError(f"{args.output} exists (--force overwrites it)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UserError(f"output directory does not exist: {os.path.dirname(args.output)}")
    models = [load(path) for path in args.models]
    weights = args.weights if args.weights is not None else [1.0] * len(models)
    model = average(models, weights)
    extra = {"averaged_from": json.dumps([[path, w] for path, w in zip(args.models, weights)])}
    recorded = models[0].metadata or {}
    for key in ("sampling_recipe", "distill_config"):  # a student's recipe: new files, and older ones
        if recorded.get(key):
            extra[key] = recorded[key]  # all inputs sample alike (checked), so the student's settings carry over
    save(model, args.output, dtype=args.dtype, extra=extra)
    print(f"{args.output}: the {'weighted ' if args.weights else ''}average of {len(models)} models")
    return 0


def _export(args: argparse.Namespace) -> int:
    from flowtts.checkpoints.export import export_upstream

    model = load_model(args)
    paths = export_upstream(model, args.out, name=args.name, dtype=args.dtype, overwrite=args.force)
    for note in paths["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {paths['weights']}, {paths['vocab']}, {paths['config']}; with F5-TTS:")
    print(
        f"  f5-tts_infer-cli --model_cfg {paths['config']} --ckpt_file {paths['weights']} "
        f"--vocab_file {paths['vocab']} --ref_audio REF.wav --ref_text '...' --gen_text '...'"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from flowtts.checkpoints.inspect import format_facts, model_facts

    resolve_checkpoint(args)
    model = load_model(argparse.Namespace(**{**vars(args), "quiet": True}))
    path = args.model if not args.model.startswith("builtin") else None
    if path is None:
        from flowtts.checkpoints.loader import builtin_path

        path = builtin_path(args.model)
    facts = model_facts(model, path)
    print(json.dumps(facts, indent=2) if args.json else format_facts(facts))
    return 0


def add_average(sub) -> None:
    """Register ``average``."""
    av = sub.add_parser("average", help="average the weights of models that share a starting point (a model soup)")
    av.add_argument("models", nargs="+", help="two or more flowtts files of one architecture")
    av.add_argument("-o", "--output", required=True, help="the averaged model (.safetensors)")
    av.add_argument("--weights", type=numbers, help="comma-separated positive weights, one per model (default: equal)")
    av.add_argument("--dtype", choices=DTYPE_CHOICES, help="stored precision (default float32)")
    av.add_argument("--force", action="store_true", help="overwrite --output")
    av.set_defaults(func=_average)


def add_export(sub) -> None:
    """Register ``export``."""
    ex = sub.add_parser("export", help="write a model in F5-TTS's layout (weights, vocab.txt, model config)")
    ex.add_argument("model", help="flowtts file, official checkpoint, or 'builtin' / 'builtin:student'")
    ex.add_argument("-o", "--out", required=True, help="directory for NAME.safetensors, vocab.txt, NAME.yaml")
    ex.add_argument("--name", default="model", help="file stem and the config's model name (default: model)")
    add_architecture_options(ex)
    ex.add_argument("--dtype", choices=DTYPE_CHOICES, help="stored precision (default: as loaded)")
    ex.add_argument("--force", action="store_true", help="replace existing files")
    ex.set_defaults(func=_export)


def add_info(sub) -> None:
    """Register ``info``."""
    info = sub.add_parser("info", help="what a model file holds: architecture, size, vocabulary, sampling, origin")
    info.add_argument("model", nargs="?", default="builtin", help="model file, or builtin / builtin:student")
    info.add_argument("-p", "--ckpt_file", help="checkpoint (upstream's spelling; then MODEL names its architecture)")
    add_architecture_options(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)
