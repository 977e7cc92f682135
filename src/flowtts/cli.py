"""Command line: ``flowtts <command> ...`` (``flowtts <command> --help`` for each)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit status 2, no traceback."""


def _demo(args: argparse.Namespace) -> int:
    from flowtts.demo import run_demo

    run_demo(steps=args.steps, seed=args.seed, threads=args.threads)
    return 0


def _read_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    lines = [line for line in lines if line]
    if not lines:
        raise UserError(f"{path} has no non-empty lines")
    return lines


def _infer(args: argparse.Namespace) -> int:
    import torch

    from flowtts.audio.io import read_audio, write_audio
    from flowtts.audio.vocoders import load_vocoder
    from flowtts.checkpoints.loader import load
    from flowtts.infer import InferenceOptions, prepare_reference, save_mel_png, synthesize

    if args.text is not None and not args.text.strip():
        raise UserError("--text is empty")
    texts = [args.text] if args.text is not None else _read_lines(args.text_file)
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.speed <= 0:
        raise UserError(f"--speed must be positive, got {args.speed}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.text is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UserError(f"output directory does not exist: {os.path.dirname(args.output)}")
    if args.text_file is not None and os.path.isfile(args.output):
        raise UserError(f"with --text-file, -o must be a directory, and {args.output} is a file")

    model = load(args.model, preset=args.preset, vocab=args.vocab, device=args.device, dtype=args.dtype)
    if getattr(model, "preset", None) and args.preset is None and not args.quiet:
        print(f"using preset {model.preset} (matched by parameter shapes)", file=sys.stderr)
    rate = model.mel_spec.target_sample_rate
    ref_audio, ref_text = args.ref_audio, args.ref_text
    if ref_audio is None:
        from flowtts.checkpoints.loader import builtin_reference

        ref_audio, ref_text = builtin_reference(ref_text)
    if ref_text is None:
        raise UserError("--ref-text is required with --ref-audio (the transcript of the reference clip)")
    wave, _ = read_audio(ref_audio, rate)
    options = InferenceOptions(
        steps=args.steps,
        cfg_strength=args.cfg,
        sway_sampling_coef=args.sway,
        speed=args.speed,
        batch_size=args.batch_size,
    )
    reference = prepare_reference(model, wave, ref_text, options)
    vocoder = load_vocoder(model.mel_spec, args.vocoder_path)
    seeds = [args.seed + i for i in range(len(texts))] if args.seed is not None else None
    results = synthesize(
        model, reference, texts, vocoder=vocoder, options=options, seeds=seeds, progress=not args.quiet
    )

    if args.text is not None:
        targets = [args.output]
    else:
        os.makedirs(args.output, exist_ok=True)
        targets = [os.path.join(args.output, f"{i + 1:03d}.wav") for i in range(len(texts))]
    for target, result in zip(targets, results):
        write_audio(target, result.wave, rate)
        if args.save_mel:
            png = args.save_mel if args.text is not None else os.path.splitext(target)[0] + ".png"
            save_mel_png(result.mel, png, title=result.text[:60])
        if not args.quiet:
            seconds = result.wave.numel() / rate
            print(f"{target}: {seconds:.2f} s, seed {result.seed}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtts", description="F5-TTS-compatible flow-matching TTS")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="sample a small model with cache=True and cache=False and report")
    demo.add_argument("--steps", type=int, default=16)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None)
    demo.set_defaults(func=_demo)

    infer = sub.add_parser("infer", help="synthesise speech from text and a reference clip")
    infer.add_argument("--model", default="builtin", help="flowtts or F5-TTS checkpoint, or 'builtin'")
    infer.add_argument("--preset", help="architecture of an official checkpoint (default: matched by shapes)")
    infer.add_argument("--vocab", help="vocab.txt the official checkpoint was trained with")
    infer.add_argument("--ref-audio", help="reference clip (any format soundfile reads)")
    infer.add_argument("--ref-text", help="transcript of the reference clip")
    text = infer.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="text to speak")
    text.add_argument("--text-file", help="one utterance per line; -o is then a directory")
    infer.add_argument("-o", "--output", default="out.wav", help="output wav (a directory with --text-file)")
    infer.add_argument("--steps", type=int, default=32)
    infer.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance strength")
    infer.add_argument("--sway", type=float, default=-1.0, help="sway sampling coefficient")
    infer.add_argument("--speed", type=float, default=1.0)
    infer.add_argument("--seed", type=int, help="seed of the first utterance (the n-th uses seed + n - 1)")
    infer.add_argument("--batch-size", type=int, default=4, help="utterances per sample() call")
    infer.add_argument("--device", default="cpu")
    infer.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    infer.add_argument("--threads", type=int)
    infer.add_argument("--vocoder-path", help="local Vocos directory (config.yaml + weights); default Griffin-Lim")
    infer.add_argument("--save-mel", help="also write the spectrogram as a PNG (a directory's files with --text-file)")
    infer.add_argument("-q", "--quiet", action="store_true")
    infer.set_defaults(func=_infer)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="flowtts: %(message)s")
    try:
        return args.func(args)
    except (UserError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"flowtts {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
