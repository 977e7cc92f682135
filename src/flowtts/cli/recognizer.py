"""``flowtts asr``: train, test and use the CTC recogniser (the intelligibility judge and reward)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from flowtts.cli.common import UserError, seed


def _asr_train(args: argparse.Namespace) -> int:
    import torch

    from flowtts.config import MelConfig
    from flowtts.eval.recognizer import RecognizerConfig
    from flowtts.train.asr import ASR_LOOP, ASRConfig, train_recognizer
    from flowtts.train.data import MelDataset

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UserError(f"--max-minutes must be positive, got {args.max_minutes}")
    loop = ASR_LOOP.with_overrides(steps=args.steps, lr=args.lr, warmup=args.warmup, save_every=args.save_every)
    config = ASRConfig(loop=loop, batch_frames=args.batch_frames, eval_every=args.eval_every, seed=args.seed)
    dataset = MelDataset(args.data)
    held_out = MelDataset(args.heldout) if args.heldout else None
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    architecture = RecognizerConfig(
        channels=args.channels,
        hidden=args.hidden,
        gru_layers=args.gru_layers,
        mel=MelConfig(**dataset.info.get("mel", {})),
    )
    summary = train_recognizer(
        dataset,
        args.out,
        config,
        held_out=held_out,
        recognizer_config=architecture,
        progress=not args.quiet,
        max_seconds=max_seconds,
    )
    line = f"step {summary['step']}, loss {summary['loss']:.4f}, {summary['seconds']:.0f} s"
    if summary["cer"] is not None:
        line += f"; held-out CER {summary['cer']:.4f}, WER {summary['wer']:.4f}"
    print(f"{line}; recogniser in {os.path.join(args.out, 'recognizer.safetensors')}")
    return 0


def _asr_test(args: argparse.Namespace) -> int:
    from flowtts.eval.recognizer import load_recognizer
    from flowtts.train.asr import check_dataset, evaluate_recognizer
    from flowtts.train.data import MelDataset

    recognizer = load_recognizer(args.recognizer)
    dataset = MelDataset(args.data)
    check_dataset(dataset, recognizer, args.data)
    figures = evaluate_recognizer(recognizer, dataset)
    print(
        f"{len(dataset)} utterances: CTC loss/char {figures['loss']:.4f}  CER {figures['cer']:.4f}  "
        f"WER {figures['wer']:.4f}"
    )
    if args.show:
        for item, heard in list(zip(dataset.items, figures["hypotheses"]))[: args.show]:
            print(f"  {item['text']}\n  -> {heard}")
    return 0


def _asr_transcribe(args: argparse.Namespace) -> int:
    import torch

    from flowtts.audio.io import read_audio
    from flowtts.eval.recognizer import load_recognizer
    from flowtts.model.mel import MelSpec

    recognizer = load_recognizer(args.recognizer)
    mel_config = recognizer.config.mel
    spec = MelSpec(**dataclasses.asdict(mel_config))
    for path in args.audio:
        wave, _ = read_audio(path, mel_config.target_sample_rate)
        with torch.no_grad():
            mel = spec(wave[None]).transpose(1, 2)
        print(f"{path}\t{recognizer.transcribe(mel)[0]}")
    return 0


def add_asr(sub) -> None:
    """Register ``asr train``, ``asr test`` and ``asr transcribe``."""
    asr = sub.add_parser("asr", help="the CTC recogniser on mels: train it, test it, transcribe with it")
    asr_sub = asr.add_subparsers(dest="asr_command", required=True)

    tr = asr_sub.add_parser("train", help="train a recogniser on a prepared dataset (resumes from OUT/last.pt)")
    tr.add_argument("--data", required=True, help="prepared dataset (flowtts data prepare)")
    tr.add_argument("--heldout", help="prepared held-out set: CER/WER every --eval-every steps")
    tr.add_argument("--out", required=True, help="run directory: last.pt, recognizer.safetensors, asr_log.csv")
    tr.add_argument("--channels", type=int, default=256, help="convolution channels")
    tr.add_argument("--hidden", type=int, default=192, help="GRU units per direction")
    tr.add_argument("--gru-layers", type=int, default=2)
    library = "default: flowtts.train.asr.ASR_LOOP"  # read when the run starts
    tr.add_argument("--steps", type=int, help=f"optimiser steps ({library})")
    tr.add_argument("--lr", type=float, help=f"peak learning rate ({library})")
    tr.add_argument("--warmup", type=int, help=f"warm-up steps ({library})")
    tr.add_argument("--batch-frames", type=int, default=12_000)
    tr.add_argument("--save-every", type=int, help=f"steps between resume checkpoints ({library})")
    tr.add_argument("--eval-every", type=int, default=200)
    tr.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    tr.add_argument("--seed", type=seed, default=0)
    tr.add_argument("--threads", type=int)
    tr.add_argument("-q", "--quiet", action="store_true")
    tr.set_defaults(func=_asr_train)

    te = asr_sub.add_parser("test", help="a recogniser's CTC loss, CER and WER on a prepared dataset")
    te.add_argument("--recognizer", default="builtin", help="recogniser file (default: the built-in voice's)")
    te.add_argument("--data", required=True, help="prepared dataset")
    te.add_argument("--show", type=int, default=0, help="print this many transcripts")
    te.set_defaults(func=_asr_test)

    tx = asr_sub.add_parser("transcribe", help="what a recogniser hears in audio files")
    tx.add_argument("audio", nargs="+", help="audio files")
    tx.add_argument("--recognizer", default="builtin", help="recogniser file (default: the built-in voice's)")
    tx.set_defaults(func=_asr_transcribe)
