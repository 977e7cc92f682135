"""``flowtts data``, ``train``, ``distill`` and ``reward``: making and improving models."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from flowtts.cli import fewstep
from flowtts.cli.common import DTYPE_CHOICES, UserError, add_sampling_flags, numbers, seed, start_run

# The loop options' defaults are the library's (each run config's default ``loop``), filled in at run time.
TRAIN_DEFAULT = "default: flowtts.train.trainer.TRAIN_LOOP"


def _data_prepare(args: argparse.Namespace) -> int:
    from flowtts.text import load_vocab
    from flowtts.train.data import prepare_dataset

    vocab = load_vocab(args.vocab) if args.vocab else None
    report = prepare_dataset(
        args.metadata,
        args.audio_dir,
        args.out,
        vocab=vocab,
        max_frames=args.max_frames,
        progress=not args.quiet,
        layout=args.layout,
    )
    print(report.summary())
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    import time

    from flowtts.train.synth import synthesize_corpus

    start = time.perf_counter()
    report = synthesize_corpus(
        args.out, n=args.n, heldout=args.heldout, voices=args.voices, seed=args.seed, progress=not args.quiet
    )
    print(
        f"{report.utterances} training + {report.heldout} held-out utterances, "
        f"{report.seconds_of_audio / 3600:.2f} h of audio, voices {', '.join(report.voices)}, "
        f"{time.perf_counter() - start:.0f} s"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from flowtts.checkpoints.loader import load
    from flowtts.model.build import build_model
    from flowtts.text import load_vocab
    from flowtts.train.data import MelDataset
    from flowtts.train.trainer import TRAIN_LOOP, TrainConfig, train
    from flowtts.utils.memory import retain_freed_memory

    retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = MelDataset(args.data)
    held_out = MelDataset(args.heldout) if args.heldout else None
    if args.init:
        model = load(args.init, preset=args.init_preset, vocab=args.vocab)
        if (
            args.preset
            and model.config.backbone_kwargs()
            != build_model(args.preset, model.vocab_char_map).config.backbone_kwargs()
        ):
            raise UserError(f"--init {args.init} does not have the architecture of --preset {args.preset}")
    else:
        vocab = load_vocab(args.vocab or dataset.vocab_path())
        torch.manual_seed(args.seed)  # the starting weights: same seed, same command, same run
        model = build_model(args.preset or "tiny", vocab)
    from flowtts.text import unknown_characters

    if args.extend_vocab and not args.init:
        raise UserError("--extend-vocab extends the vocabulary of an --init checkpoint (from scratch, --vocab is used)")
    if model.vocab_char_map is not None:
        missing = unknown_characters(dataset.texts, model.vocab_char_map)
        if missing and args.extend_vocab:
            from flowtts.model.build import extend_vocab

            model = extend_vocab(model, missing, seed=args.seed)
            if not args.quiet:
                print(f"vocabulary extended by {len(missing)} units: {' '.join(missing)}", file=sys.stderr)
        elif missing:
            logging.getLogger("flowtts").warning(
                "dataset units outside the vocabulary (read as id 0; --extend-vocab adds them): %s", " ".join(missing)
            )
    config = TrainConfig(
        loop=_loop(args, TRAIN_LOOP, "grad_clip"),
        batch_frames=args.batch_frames,
        max_samples=args.max_samples,
        eval_every=args.eval_every,
        seed=args.seed,
        dtype=args.dtype or ({True: "bfloat16", False: "float32"}.get(args.bf16)),
        isolate_batch=args.isolate_batch,
        grad_accum=args.grad_accum,
        snapshot_every=args.snapshot_every,
        keep_snapshots=args.keep_snapshots,
        log_samples=args.log_samples,
        ctc_weight=args.ctc_weight,
        ctc_min_time=args.ctc_min_time,
        recognizer=args.recognizer,
        pair_fraction=args.pair_fraction,
        pair_gap=args.pair_gap,
        pair_rms=args.pair_rms,
    )
    summary = train(model, dataset, args.out, config, held_out=held_out, progress=not args.quiet)
    print(f"step {summary['step']}, loss {summary['loss']:.4f}, {summary['seconds']:.0f} s; weights in {args.out}")
    return 0


def _add_pair_layout_options(parser: argparse.ArgumentParser) -> None:
    """``--pair-gap`` and ``--pair-rms`` (:class:`flowtts.train.data.PairLayout`)."""
    parser.add_argument(
        "--pair-gap",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="lay the first utterance of a pair out as inference prepares a reference: cut to its speech and "
        "followed by LO..HI seconds of digital silence (default: as recorded; needs data prepared by this version)",
    )
    parser.add_argument(
        "--pair-rms", type=float, default=0.0, help="with --pair-gap: raise quieter references to this RMS (0: off)"
    )


def _loop(args: argparse.Namespace, defaults, *more: str):
    """The run's loop settings: ``defaults`` (the library's, e.g. ``TRAIN_LOOP``) with the options given
    (those :func:`_add_run_options` declares, and ``more``)."""
    names = ("steps", "lr", "warmup", "ema_decay", "save_every", "log_every", *more)
    return defaults.with_overrides(**{name: getattr(args, name) for name in names})


def _prompt_data(path: str):
    """A prepared dataset prompts are drawn from; a :class:`UserError` if it has no rows (checked before any
    training, so that a run never ends in a report it cannot make)."""
    from flowtts.train.data import MelDataset

    dataset = MelDataset(path)
    if len(dataset) == 0:
        raise UserError(f"{path} has no usable rows")
    return dataset


def _distill_fewstep(args: argparse.Namespace) -> int:
    """``distill --method progressive|consistency|adversarial|dmd`` (:mod:`flowtts.cli.fewstep`)."""
    import copy

    from flowtts.checkpoints.loader import load
    from flowtts.train.fewstep.run import FEWSTEP_LOOP

    loop = _loop(args, FEWSTEP_LOOP)
    fewstep.method_config(args, loop)  # refused before anything loads
    teacher = load(args.teacher, preset=args.preset, vocab=args.vocab)
    student = load(args.student, preset=args.preset, vocab=args.vocab) if args.student else copy.deepcopy(teacher)
    dataset = _prompt_data(args.data)
    held = _prompt_data(args.heldout) if args.heldout else dataset
    return fewstep.run(args, loop, teacher, student, dataset, held)


def _distill(args: argparse.Namespace) -> int:
    import copy
    import dataclasses

    from flowtts.checkpoints.loader import load
    from flowtts.sampling.recipe import SamplingRecipe
    from flowtts.train.distill import distill
    from flowtts.train.distill_config import DISTILL_LOOP, DistillConfig, student_recipe
    from flowtts.train.distill_report import evaluate, report
    from flowtts.train.prompts import fixed_prompts

    start_run(args)
    if args.eval_every < 0 or args.eval_prompts < 1:
        raise UserError(
            f"--eval-every must be >= 0 and --eval-prompts >= 1, got {args.eval_every} and {args.eval_prompts}"
        )
    if args.method != "trajectory":
        return _distill_fewstep(args)
    student_cfg = args.teacher_cfg if args.keep_guidance else 0.0
    config = DistillConfig(
        teacher=SamplingRecipe(steps=args.teacher_steps, cfg_strength=args.teacher_cfg),
        student=student_recipe(args.student_steps, args.student_grid, student_cfg, times=args.student_times),
        velocity_steps=args.velocity_steps,
        segment_steps=args.segment_steps,
        segment_start=args.segment_start,
        teacher_pool=args.teacher_pool,
        student_dropout=not args.no_dropout,
        learn_times=args.learn_times,
        times_lr=args.times_lr,
        grad_checkpoint=args.grad_checkpoint,
        backprop_steps=args.backprop_steps,
        dtype=args.dtype,
        ctc_weight=args.ctc_weight,
        recognizer=args.recognizer,
        prompts=args.prompts,
        batch_size=args.batch_size,
        loop=_loop(args, DISTILL_LOOP),
        seed=args.seed,
    )
    teacher = load(args.teacher, preset=args.preset, vocab=args.vocab)
    student = load(args.student, preset=args.preset, vocab=args.vocab) if args.student else copy.deepcopy(teacher)
    dataset = _prompt_data(args.data)
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    held = _prompt_data(args.heldout) if args.heldout else dataset
    eval_prompts = None
    if args.eval_every:
        first = args.report_prompts if args.eval_start is None else args.eval_start
        eval_rows = list(range(first, min(first + args.eval_prompts, len(held))))
        if not eval_rows:
            raise UserError(
                f"--eval-every: the held-out set has {len(held)} rows, none from --eval-start {first} on "
                "(the evaluation prompts follow the report's unless --eval-start says otherwise)"
            )
        eval_prompts = fixed_prompts(held, eval_rows, config.prompts, teacher.num_channels, config, seed=1)
    report_rows = list(range(min(args.report_prompts, len(held))))  # drawn now: refused before the run if unusable
    prompts = None
    if report_rows:
        prompts = fixed_prompts(held, report_rows, config.prompts, teacher.num_channels, config, seed=0)
    summary = distill(
        teacher,
        student,
        dataset,
        args.out,
        config,
        progress=not args.quiet,
        max_seconds=max_seconds,
        eval_prompts=eval_prompts,
        eval_every=args.eval_every,
    )
    print(f"distilled {summary['step']} steps in {summary['seconds']:.0f} s, last loss {summary['loss']:.5f}")
    if args.report_prompts == 0:  # no report asked for
        return 0
    final = load(f"{args.out}/student.safetensors")
    recorded = dataclasses.replace(config, student=SamplingRecipe.from_metadata(final.metadata))  # a learned grid
    rows, mels = evaluate(teacher, final, prompts, recorded)
    source = f"{len(report_rows)} {config.prompts} prompts, rows 0-{len(report_rows) - 1} of {held.directory}"
    source += " (report split)"
    if eval_prompts is not None:
        source += f"; best.safetensors was chosen on rows {eval_rows[0]}-{eval_rows[-1]} (selection split)"
    print(report(rows, mels, args.out, source))
    return 0


def _reward(args: argparse.Namespace) -> int:
    """``reward``: raise a reward of the model's own samples, or (``--objective dpo``) Flow-DPO on preferences."""
    start_run(args)
    _check_objective(args)
    if args.objective == "dpo":
        return _reward_dpo(args)
    from flowtts.checkpoints.loader import load
    from flowtts.train.reward import REWARD_LOOP, RewardConfig, finetune, resolve_reward

    config = RewardConfig(
        reward=args.reward,
        sample_steps=args.sample_steps,
        cfg_strength=args.cfg,
        backprop_steps=args.backprop_steps,
        grad_checkpoint=args.grad_checkpoint,
        anchor_weight=args.anchor_weight,
        dropout=args.dropout,
        prompts=args.prompts,
        recognizer=args.recognizer,
        on=args.on,
        vocoder=args.vocoder or "auto",
        pair_gap=args.pair_gap,
        pair_rms=args.pair_rms,
        batch_size=args.batch_size,
        loop=_loop(args, REWARD_LOOP),
        seed=args.seed,
    )
    model = load(args.model, preset=args.preset, vocab=args.vocab)
    reward = resolve_reward(config.reward, model, config.recognizer, on=config.on, vocoder=config.vocoder)
    judges = _judges(args, model)
    dataset = _prompt_data(args.data)
    held = _prompt_data(args.heldout) if args.heldout else dataset
    summary = finetune(model, dataset, args.out, config, progress=not args.quiet, max_seconds=_max_seconds(args))
    print(
        f"fine-tuned {summary['step']} steps in {summary['seconds']:.0f} s, "
        f"last batch reward {summary['reward']:.5f}, loss {summary['loss']:.5f}"
    )
    _reward_report(args, held, config, reward, judges, config.recipe(model).sample_kwargs())
    return 0


def _check_objective(args: argparse.Namespace) -> None:
    """The options of one objective are not given to the other; ``--pairs`` and ``--beta`` are sound."""
    if args.objective == "dpo":
        if args.pairs is None:
            raise UserError("--objective dpo needs --pairs FILE (a preference file of flowtts prefs)")
        if not os.path.isfile(args.pairs):
            raise UserError(f"--pairs: no such preference file {args.pairs!r}")
        from flowtts.train.dpo import MAX_BETA

        if args.beta is not None and not 0 < args.beta <= MAX_BETA:
            raise UserError(f"--beta must be a number > 0, at most {MAX_BETA:g}, got {args.beta}")
        reward_only = {
            "--reward": args.reward != "speaker",
            "--on": args.on != "mel",
            "--backprop-steps": args.backprop_steps is not None,
            "--grad-checkpoint": args.grad_checkpoint,
            "--anchor-weight": args.anchor_weight != 1.0,
        }
        for flag, given in reward_only.items():
            if given:
                raise UserError(f"{flag} belongs to --objective reward (dpo learns from --pairs, not a reward)")
        return
    for flag, value in (("--pairs", args.pairs), ("--beta", args.beta)):
        if value is not None:
            raise UserError(f"{flag} belongs to --objective dpo (the reward objective raises --reward)")


def _judges(args: argparse.Namespace, model):
    """The report's fixed judges (WER, SIM, DNSMOS on ``--vocoder``'s waves), or ``None`` with ``--no-judges``
    or no report."""
    if args.no_judges or args.report_prompts == 0:
        return None
    from flowtts.train.rendering import Judges, load_vocoder

    try:
        vocoder = load_vocoder(args.vocoder or "auto", model)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(f"--vocoder: {error}") from None
    return Judges(model, vocoder)


def _max_seconds(args: argparse.Namespace) -> float | None:
    return args.max_minutes * 60 if args.max_minutes is not None else None


def _reward_report(args: argparse.Namespace, held, config, reward, judges, sample_kwargs: dict) -> None:
    """The final report (``report.txt``): the model before and after on held-out prompts, and the recordings."""
    if args.report_prompts == 0:
        return
    from flowtts.checkpoints.loader import load
    from flowtts.train.reward import evaluate, format_rows, heldout_prompts
    from flowtts.utils.files import atomic_output

    before = load(args.model, preset=args.preset, vocab=args.vocab)
    after = load(os.path.join(args.out, "model.safetensors"))
    prompts = heldout_prompts(held, args.report_prompts, config, before.num_channels)
    models = {"before": (before, sample_kwargs), "after (EMA)": (after, sample_kwargs)}
    text = format_rows(evaluate(models, prompts, reward, reference="before", judges=judges), "before")
    with atomic_output(os.path.join(args.out, "report.txt")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)


def _reward_dpo(args: argparse.Namespace) -> int:
    """``reward --objective dpo``: Flow-DPO on ``--pairs`` against the starting model (:mod:`flowtts.train.dpo`)."""
    from flowtts.checkpoints.loader import load
    from flowtts.sampling.recipe import SamplingRecipe
    from flowtts.train.dpo import DEFAULT_BETA, DPO_LOOP, DPOConfig, finetune_dpo, load_pairs, ranked
    from flowtts.train.reward import RewardConfig

    config = DPOConfig(
        beta=DEFAULT_BETA if args.beta is None else args.beta,
        batch_size=args.batch_size,
        dropout=args.dropout,
        loop=_loop(args, DPO_LOOP),
        seed=args.seed,
    )
    # The report's prompts and sampling, as a reward run would draw them.
    prompts = RewardConfig(reward="dpo", prompts=args.prompts, pair_gap=args.pair_gap, pair_rms=args.pair_rms)
    model = load(args.model, preset=args.preset, vocab=args.vocab)
    pairs = load_pairs(args.pairs)
    try:
        ranked(pairs, model.num_channels)
    except ValueError as error:
        raise UserError(f"--pairs {args.pairs}: {error}") from None
    judges = _judges(args, model)
    held = _prompt_data(args.heldout) if args.heldout else _prompt_data(args.data)
    sample_kwargs = SamplingRecipe.for_model(model, steps=args.sample_steps, cfg_strength=args.cfg).sample_kwargs()
    summary = finetune_dpo(model, pairs, args.out, config, progress=not args.quiet, max_seconds=_max_seconds(args))
    print(
        f"Flow-DPO {summary['step']} steps in {summary['seconds']:.0f} s on {summary['pairs']} pairs "
        f"({summary['human']} chosen by people), "
        f"last batch loss {summary['loss']:.5f}, margin {summary['margin']:.3e}, accuracy {summary['accuracy']:.2f}"
    )
    _reward_report(args, held, prompts, None, judges, sample_kwargs)
    return 0


def add_data(sub) -> None:
    """Register ``data prepare`` and ``data synth``."""
    data = sub.add_parser("data", help="prepare training data, or synthesise an offline corpus")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prep = data_sub.add_parser("prepare", help="metadata.csv (audio_file|text) + audio -> mels")
    prep.add_argument("metadata", help="metadata.csv with audio_file|text rows (or LJSpeech's, with --layout)")
    prep.add_argument(
        "--layout",
        choices=["f5-tts", "ljspeech"],
        default="f5-tts",
        help="f5-tts: audio_file|text; ljspeech: id|text|normalized text, audio in wavs/ID.wav",
    )
    prep.add_argument("--audio-dir", help="folder the audio paths are relative to (default: the csv's)")
    prep.add_argument("--out", required=True)
    prep.add_argument("--vocab", help="vocab.txt to use (default: built from the texts)")
    prep.add_argument("--max-frames", type=int, default=2048)
    prep.add_argument("-q", "--quiet", action="store_true")
    prep.set_defaults(func=_data_prepare)
    synth = data_sub.add_parser("synth", help="build a speech corpus offline (hibari-tts, espeak-ng)")
    synth.add_argument("--out", required=True)
    synth.add_argument("--n", type=int, default=3000, help="sentences")
    synth.add_argument("--heldout", type=int, default=50)
    synth.add_argument("--voices", nargs="+", default=["hibari"], help="hibari and/or espeak:<voice>")
    synth.add_argument("--seed", type=seed, default=0)
    synth.add_argument("-q", "--quiet", action="store_true")
    synth.set_defaults(func=_data_synth)


def add_train(sub) -> None:
    """Register ``train``."""
    tr = sub.add_parser("train", help="flow-matching training (runs unchanged under torchrun)")
    tr.add_argument("--data", required=True, help="prepared dataset directory")
    tr.add_argument("--heldout", help="prepared held-out set: logs the right-vs-wrong-text loss gap")
    tr.add_argument("--out", required=True, help="run directory (resumes from its last.pt)")
    tr.add_argument("--preset", help="architecture to train from scratch (default: tiny)")
    tr.add_argument("--init", help="fine-tune from this checkpoint (flowtts or official F5-TTS)")
    tr.add_argument("--init-preset", help="architecture of an official --init checkpoint")
    tr.add_argument("--vocab", help="vocab.txt (default: the dataset's, or the --init checkpoint's)")
    tr.add_argument(
        "--extend-vocab",
        action="store_true",
        help="add the dataset's units that the --init checkpoint's vocabulary lacks (new embedding rows; F5-TTS's "
        "extend vocab)",
    )
    tr.add_argument("--steps", type=int, help=f"optimiser steps ({TRAIN_DEFAULT})")
    tr.add_argument("--lr", "--learning_rate", type=float, help=f"peak learning rate ({TRAIN_DEFAULT})")
    tr.add_argument("--warmup", "--num_warmup_updates", type=int, help=f"warm-up steps ({TRAIN_DEFAULT})")
    tr.add_argument("--batch-frames", type=int, default=8_000, help="frames per batch, padding included")
    tr.add_argument("--max-samples", "--max_samples", type=int, default=32, help="utterances per batch at most")
    tr.add_argument(
        "--grad-accum",
        "--grad_accumulation_steps",
        type=int,
        default=1,
        help="frame batches per optimiser step (their mean losses averaged, as F5-TTS's grad_accumulation_steps)",
    )
    tr.add_argument("--grad-clip", "--max_grad_norm", type=float, help=f"largest gradient norm ({TRAIN_DEFAULT})")
    tr.add_argument("--ema-decay", type=float, help=f"decay of the EMA weights ({TRAIN_DEFAULT})")
    tr.add_argument(
        "--save-every", "--last_per_updates", type=int, help=f"steps between resume checkpoints ({TRAIN_DEFAULT})"
    )
    tr.add_argument(
        "--snapshot-every",
        "--save_per_updates",
        type=int,
        default=0,
        help="also keep the EMA weights as model_STEP.safetensors every N steps (default 0: never)",
    )
    tr.add_argument(
        "--keep-snapshots",
        "--keep_last_n_checkpoints",
        type=int,
        default=-1,
        help="snapshots to keep, newest first (default -1: all)",
    )
    tr.add_argument(
        "--log-samples",
        "--log_samples",
        action="store_true",
        help="at every save, synthesise one fixed held-out utterance into OUT/samples/ (wav + mel picture)",
    )
    tr.add_argument("--eval-every", type=int, default=250)
    tr.add_argument(
        "--ctc-weight",
        type=float,
        default=0.0,
        help="weight of a recogniser's CTC loss of the text on the one-step clean-mel estimate (0: off)",
    )
    tr.add_argument("--ctc-min-time", type=float, default=0.5, help="the CTC term skips flow times below this")
    tr.add_argument("--recognizer", default="builtin", help="recogniser file of --ctc-weight (default: built-in)")
    tr.add_argument(
        "--pair-fraction",
        type=float,
        default=0.0,
        help="share of utterances trained two in a row (texts joined as reference + new text), the layout "
        "inference asks for when a reference clip is continued with another sentence (0: off)",
    )
    _add_pair_layout_options(tr)
    tr.add_argument("--log-every", type=int, help=f"steps between log rows ({TRAIN_DEFAULT})")
    tr.add_argument("--seed", type=seed, default=0)
    tr.add_argument(
        "--dtype", choices=DTYPE_CHOICES, help="autocast dtype of the network (default: bfloat16 on CUDA, else float32)"
    )
    tr.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="--dtype bfloat16 / float32")
    tr.add_argument("--isolate-batch", action="store_true", help="mask padding in attention (slower)")
    tr.add_argument("--threads", type=int)
    tr.add_argument("-q", "--quiet", action="store_true")
    tr.set_defaults(func=_train)


def _add_run_options(parser: argparse.ArgumentParser, defaults: str) -> None:
    """The optimisation, checkpoint and report options of ``distill`` and ``reward``; the loop settings'
    defaults are the library's ``defaults`` (named in the help), read when the run starts (:func:`_loop`)."""
    library = f"default: {defaults}"
    parser.add_argument("--steps", type=int, help=f"optimiser steps ({library})")
    parser.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, help=f"peak learning rate ({library})")
    parser.add_argument("--warmup", type=int, help=f"warm-up steps ({library})")
    parser.add_argument("--ema-decay", type=float, help=f"decay of the EMA weights ({library})")
    parser.add_argument("--save-every", type=int, help=f"steps between resume checkpoints ({library})")
    parser.add_argument("--log-every", type=int, help=f"steps between log rows ({library})")
    parser.add_argument("--report-prompts", type=int, default=8, help="held-out prompts in the final report (0: none)")


def add_distill(sub) -> None:
    """Register ``distill``."""
    ds = sub.add_parser("distill", help="distil a many-step teacher into a few-step student")
    ds.add_argument("--teacher", default="builtin", help="teacher checkpoint (flowtts, official, or 'builtin')")
    ds.add_argument("--student", help="initial student (default: a copy of the teacher)")
    ds.add_argument("--preset", help="architecture of official checkpoints")
    ds.add_argument("--vocab", help="vocab.txt of official checkpoints")
    ds.add_argument("--data", required=True, help="prepared dataset the prompts come from")
    ds.add_argument("--heldout", help="prepared held-out set for the final report (default: --data)")
    ds.add_argument("--out", required=True)
    _add_distill_student(ds)
    _add_distill_objectives(ds)
    fewstep.add_method_options(ds)
    ds.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        help="precision of the teacher's and student's networks while distilling (autocast; default float32; "
        "float16 needs a GPU); ODE states, losses and the report stay float32",
    )
    _add_run_options(ds, "flowtts.train.distill_config.DISTILL_LOOP")
    _add_distill_eval(ds)
    add_sampling_flags(ds, ("run_seed", "threads"))
    ds.add_argument("-q", "--quiet", action="store_true")
    ds.set_defaults(func=_distill)


def _add_distill_student(ds: argparse.ArgumentParser) -> None:
    """The teacher's and the student's sampling: steps, guidance, grid."""
    ds.add_argument("--student-steps", type=int, default=4)
    ds.add_argument("--teacher-steps", type=int, default=32)
    ds.add_argument("--teacher-cfg", type=float, default=2.0)
    ds.add_argument("--keep-guidance", action="store_true", help="student keeps CFG (default: distilled away)")
    ds.add_argument("--student-grid", choices=["uniform", "epss", "sway", "custom"], default="uniform")
    ds.add_argument(
        "--student-times", type=numbers, help="the custom grid: comma-separated times, 0 to 1 (e.g. 0,0.02,0.08,0.3,1)"
    )
    ds.add_argument(
        "--velocity-steps",
        type=int,
        default=0,
        help="first steps match the teacher's guided velocity at the student's grid times (cheap warm-up)",
    )
    ds.add_argument(
        "--segment-steps",
        type=int,
        default=0,
        help="next steps match each student step to the teacher's trajectory (one network call per step)",
    )
    ds.add_argument(
        "--segment-start",
        choices=["teacher", "student", "both"],
        default="teacher",
        help="segment steps start from the teacher's states, the student's own (on-policy), or both",
    )
    ds.add_argument(
        "--teacher-pool",
        type=int,
        default=0,
        help="sample this many teacher trajectories once and draw every step from them (0: sample every step)",
    )
    ds.add_argument("--no-dropout", action="store_true", help="switch the student's dropout off while distilling")


def _add_distill_objectives(ds: argparse.ArgumentParser) -> None:
    """What the student learns and from which prompts; how gradients reach it."""
    ds.add_argument(
        "--learn-times",
        action="store_true",
        help="learn the student's interior solver times with its weights (gradients through the sampler reach "
        "the grid); the student records the learned grid. With --lr 0: learn only the schedule",
    )
    ds.add_argument("--times-lr", type=float, default=1e-3, help="learning rate of --learn-times (default 1e-3)")
    ds.add_argument(
        "--ctc-weight",
        type=float,
        default=0.0,
        help="add a recogniser's CTC loss of the text on the student's samples (DMOSpeech's recipe; 0: off)",
    )
    ds.add_argument("--recognizer", default="builtin", help="recogniser file of --ctc-weight (default: built-in)")
    ds.add_argument(
        "--prompts",
        choices=["prefix", "pair", "unprompted"],
        default="prefix",
        help="prefix: the leading 20-50%% of an utterance continued with its own text (as the teacher trained); "
        "pair: one utterance as the reference and another's text to say (as inference continues a clip); "
        "unprompted: an utterance said with no audio prompt (inference with --no-continue-reference). "
        "The report and --eval-every prompts are of the same kind",
    )
    ds.add_argument("--grad-checkpoint", action="store_true")
    ds.add_argument("--backprop-steps", type=int)


def _add_distill_eval(ds: argparse.ArgumentParser) -> None:
    """``--eval-every``'s held-out check during the run."""
    ds.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="every N steps: the EMA student's distance to the teacher on held-out prompts "
        "(distill_eval.csv), the closest kept as best.safetensors (0: off)",
    )
    ds.add_argument("--eval-prompts", type=int, default=16, help="held-out prompts of --eval-every")
    ds.add_argument(
        "--eval-start",
        type=int,
        help="first held-out row of --eval-every (default: after the report's --report-prompts rows)",
    )


def add_reward(sub) -> None:
    """Register ``reward``."""
    rw = sub.add_parser("reward", help="fine-tune a model to raise a differentiable reward of its own samples")
    rw.add_argument("--model", default="builtin", help="model to fine-tune (flowtts, official, 'builtin', ...)")
    rw.add_argument("--preset", help="architecture of an official checkpoint")
    rw.add_argument("--vocab", help="vocab.txt of an official checkpoint")
    rw.add_argument("--data", required=True, help="prepared dataset the prompts come from")
    rw.add_argument("--heldout", help="prepared held-out set for the final report (default: --data)")
    rw.add_argument("--out", required=True, help="run directory (resumes from its last.pt)")
    rw.add_argument(
        "--objective",
        choices=["reward", "dpo"],
        default="reward",
        help="reward: raise --reward of the model's own samples, gradients through the sampler; dpo: Flow-DPO on "
        "the preference pairs of --pairs against the starting model",
    )
    rw.add_argument(
        "--reward",
        default="speaker",
        help="on mels: 'speaker' (speaker similarity to the reference), 'ctc' (minus the recogniser's CTC loss of "
        "the target text on the generated frames), 'timbre', 'preference:FILE' (a learned preference model's "
        "score); on waves (--on wave): 'speaker', 'wave-stft' (minus a multi-resolution STFT distance to the "
        "recording), 'loudness' or 'loudness:DB' (RMS level near DB dBFS, default -20); or module:function "
        "returning (b,) rewards",
    )
    rw.add_argument(
        "--on",
        choices=["mel", "wave"],
        default="mel",
        help="what the reward reads: the generated mel, or the wave --vocoder renders from it (differentiably)",
    )
    rw.add_argument("--pairs", help="--objective dpo: the preference file (flowtts prefs)")
    rw.add_argument("--beta", type=float, help="--objective dpo: how hard the preferences pull (default: 20)")
    rw.add_argument(
        "--no-judges",
        action="store_true",
        help="leave the fixed judges (pocketsphinx WER, speaker SIM, DNSMOS) out of the report",
    )
    rw.add_argument(
        "--prompts",
        choices=["prefix", "pair", "unprompted"],
        help="prefix: the leading part of an utterance continued; pair: one utterance as the reference and "
        "another's text to say; unprompted: an utterance said with no audio prompt (default: pair for ctc, "
        "else prefix)",
    )
    rw.add_argument("--recognizer", default="builtin", help="recogniser file of the ctc reward (default: built-in)")
    _add_pair_layout_options(rw)
    rw.add_argument("--sample-steps", type=int, help="solver steps (default: the model's own, e.g. a student's)")
    add_sampling_flags(rw, ("cfg",), cfg="guidance strength (default: the model's own)")
    rw.add_argument("--backprop-steps", type=int, help="gradients through the last this many solver steps")
    rw.add_argument("--grad-checkpoint", action="store_true", help="recompute each solver step in backward")
    rw.add_argument(
        "--anchor-weight", type=float, default=1.0, help="weight of the distance to the starting model's samples"
    )
    rw.add_argument("--dropout", action="store_true", help="keep dropout active while sampling")
    _add_run_options(rw, "flowtts.train.reward.REWARD_LOOP")
    add_sampling_flags(rw, ("run_seed", "threads", "vocoder"))
    rw.add_argument("-q", "--quiet", action="store_true")
    rw.set_defaults(func=_reward)
