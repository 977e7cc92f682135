"""``flowtts vocoder train``: train a vocoder for a model's mel front end on a corpus's waves."""

from __future__ import annotations

import argparse
import json
import os

from flowtts.cli.common import UserError, seed


def _mel_config(args: argparse.Namespace):
    """The mel front end of ``--model``, checked against a prepared ``--data``'s own."""
    from flowtts.checkpoints.loader import load
    from flowtts.config import MelConfig
    from flowtts.model.mel import mel_config_of

    mel = mel_config_of(load(args.model))
    info = os.path.join(args.data, "dataset.json") if os.path.isdir(args.data) else None
    if info and os.path.isfile(info):
        with open(info, encoding="utf-8") as f:
            theirs = json.load(f).get("mel")
        try:
            theirs = MelConfig(**theirs) if theirs is not None else None
        except TypeError as error:
            raise UserError(
                f"--data {args.data}: dataset.json's mel settings are not a mel front end ({error})"
            ) from None
        if theirs is not None and theirs != mel:
            raise UserError(f"--data {args.data} was prepared with mels {theirs}, but --model {args.model} reads {mel}")
    return mel


def _vocoder_train(args: argparse.Namespace) -> int:
    import torch

    from flowtts.train.vocoder.run import VOCODER_LOOP, VocoderTrainConfig, train_vocoder
    from flowtts.vocoder.network import VocoderConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UserError(f"--max-minutes must be positive, got {args.max_minutes}")
    if not os.path.exists(args.data):
        raise UserError(f"--data {args.data}: no such metadata file or prepared folder")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a file; give the run's folder (new, or one to resume)")
    architecture = VocoderConfig(
        mel=_mel_config(args),
        dim=args.dim,
        blocks=args.blocks,
        kernel=args.kernel,
        mult=args.mult,
        magnitude_prior=not args.no_prior,
    )
    loop = VOCODER_LOOP.with_overrides(
        steps=args.steps, lr=args.lr, warmup=args.warmup, save_every=args.save_every, ema_decay=args.ema_decay
    )
    given = {"batch_size": args.batch_size, "segment_frames": args.segment_frames}
    config = VocoderTrainConfig(
        vocoder=architecture,
        loop=loop,
        adversarial_from=args.adversarial_from,
        seed=args.seed,
        **{k: v for k, v in given.items() if v is not None},
    )
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    path = train_vocoder(args.data, args.out, config, init=args.init, progress=not args.quiet, max_seconds=max_seconds)
    print(f"vocoder in {path} (log: {os.path.join(args.out, 'vocoder_log.csv')})")
    return 0


def add_vocoder(sub) -> None:
    """Register ``vocoder train``."""
    vocoder = sub.add_parser("vocoder", help="the built-in neural vocoder: train one for a model's mels")
    vocoder_sub = vocoder.add_subparsers(dest="vocoder_command", required=True)
    library = "default: flowtts.train.vocoder.run.VOCODER_LOOP"
    tr = vocoder_sub.add_parser(
        "train", help="train a vocoder on a corpus's waves (resumes from OUT/last.pt; runs under torchrun)"
    )
    tr.add_argument("--data", required=True, help="metadata.csv (audio_file|text) or a prepared dataset folder")
    tr.add_argument("--out", required=True, help="run directory: last.pt, vocoder.safetensors, vocoder_log.csv")
    tr.add_argument("--model", default="builtin", help="the model whose mel front end to invert (default: builtin)")
    tr.add_argument("--init", help="a vocoder file of the same architecture to start from")
    tr.add_argument("--dim", type=int, default=256, help="ConvNeXt width")
    tr.add_argument("--blocks", type=int, default=8, help="ConvNeXt blocks")
    tr.add_argument("--kernel", type=int, default=7, help="depthwise kernel (odd)")
    tr.add_argument("--mult", type=float, default=3.0, help="hidden width of each block, times --dim")
    tr.add_argument("--no-prior", action="store_true", help="no filterbank pseudo-inverse magnitude prior")
    tr.add_argument("--steps", type=int, help=f"optimiser steps ({library})")
    tr.add_argument("--lr", type=float, help=f"peak learning rate ({library})")
    tr.add_argument("--warmup", type=int, help=f"warm-up steps ({library})")
    tr.add_argument("--ema-decay", type=float, help=f"decay of the EMA weights that are written ({library})")
    tr.add_argument("--save-every", type=int, help=f"steps between checkpoints ({library})")
    tr.add_argument("--batch-size", type=int, help="segments per step (default: VocoderTrainConfig's, 16)")
    tr.add_argument("--segment-frames", type=int, help="mel frames per segment (default: VocoderTrainConfig's, 48)")
    tr.add_argument(
        "--adversarial-from", type=int, help="first step with discriminators (default: none, reconstruction only)"
    )
    tr.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    tr.add_argument("--seed", type=seed, default=0)
    tr.add_argument("--threads", type=int)
    tr.add_argument("-q", "--quiet", action="store_true")
    tr.set_defaults(func=_vocoder_train)
