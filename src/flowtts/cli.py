"""Command line: ``flowtts <command> ...`` (``flowtts <command> --help`` for each)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit status 2, no traceback."""


def _demo(args: argparse.Namespace) -> int:
    from flowtts.demo import run_demo

    if args.distill_seconds < 0:
        raise UserError(f"--distill-seconds must be >= 0, got {args.distill_seconds}")
    run_demo(out_dir=args.out, distill_seconds=args.distill_seconds, seed=args.seed, threads=args.threads)
    return 0


DTYPE_CHOICES = ["float32", "bfloat16", "float16"]


def _times(value: str) -> tuple[float, ...]:
    """argparse type of ``--student-times`` and ``--weights``: comma-separated numbers."""
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


def _read_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    lines = [line for line in lines if line]
    if not lines:
        raise UserError(f"{path} has no non-empty lines")
    return lines


INFER_DEFAULTS = {
    "output": "out.wav",
    "speed": 1.0,
    "target_rms": 0.1,
    "cross_fade": 0.15,
    "batch_size": 4,
    "device": "cpu",
}
# infer option -> F5-TTS config key that fills it when the option is not given
CONFIG_OPTIONS = {
    "vocab": "vocab_file",
    "ref_audio": "ref_audio",
    "steps": "nfe_step",
    "cfg": "cfg_strength",
    "sway": "sway_sampling_coef",
    "speed": "speed",
    "fix_duration": "fix_duration",
    "target_rms": "target_rms",
    "cross_fade": "cross_fade_duration",
    "device": "device",
    "model_cfg": "model_cfg",
}


def _apply_config(args: argparse.Namespace) -> dict:
    """Fill the infer options not given from ``--config`` (F5-TTS's TOML); returns its extra voices."""
    from flowtts.voices import read_config

    path = args.config
    config = read_config(path)
    if args.model is None and args.ckpt_file is None:  # the command line's model wins, with its checkpoint
        args.model, args.ckpt_file = config.get("model") or None, config.get("ckpt_file") or None
    for option, key in CONFIG_OPTIONS.items():
        if getattr(args, option) is None and key in config:
            setattr(args, option, config[key])
    if args.steps is not None and not float(args.steps).is_integer():
        raise UserError(f"{path}: nfe_step must be a whole number, got {args.steps}")
    args.steps = None if args.steps is None else int(args.steps)
    if args.ref_text is None and "ref_audio" in config and args.ref_audio == config["ref_audio"]:
        args.ref_text = config.get("ref_text")  # the config's transcript goes with the config's clip
    elif config.get("ref_text") and args.ref_text is None:
        print(f"{path}: ref_text ignored: it goes with the config's ref_audio, which is not used", file=sys.stderr)
    if args.text is None and args.text_file is None:
        if config.get("gen_file"):  # read whole, as upstream: one text, e.g. a story with voice tags
            with open(config["gen_file"], encoding="utf-8") as f:
                args.text = f.read()
        elif config.get("gen_text"):
            args.text = config["gen_text"]
    args.remove_silence = args.remove_silence or config.get("remove_silence", False)
    if args.output is None and ("output_dir" in config or "output_file" in config):
        args.output = os.path.join(config.get("output_dir", "."), config.get("output_file", "out.wav"))
        args.make_output_dir = True
    return config["voices"]


UPSTREAM_VOCOS_DIR = "../checkpoints/charactr/vocos-mel-24khz"  # where upstream's --load_vocoder_from_local looks


def _resolve_checkpoint(args: argparse.Namespace) -> None:
    """Upstream's pair ``--model ARCH --ckpt_file FILE`` (or a config's) -> ``args.model`` = the file, ``args.preset``.

    Alone, ``--model`` is the checkpoint (or ``builtin``, the default).
    """
    from flowtts.checkpoints.loader import read_metadata
    from flowtts.config import PRESETS

    model, ckpt = args.model, args.ckpt_file
    if ckpt:
        if model and model not in PRESETS and model != ckpt:
            raise UserError(
                f"model {model!r} is not an architecture flowtts knows ({', '.join(PRESETS)}); with a checkpoint "
                "(ckpt_file), model names its architecture"
            )
        own = os.path.isfile(ckpt) and ckpt.endswith(".safetensors") and read_metadata(ckpt) is not None
        if model in PRESETS and args.preset is None and not own:  # a flowtts file names its own
            args.preset = model
        args.model = ckpt
    elif model in PRESETS and not os.path.exists(model):
        raise UserError(
            f"model {model!r} names an architecture without weights; flowtts downloads nothing: give ckpt_file "
            "(--ckpt_file, the checkpoint on disk) or --model builtin"
        )
    args.model = args.model or "builtin"


def _load_model(args: argparse.Namespace):
    """``--model`` with its ``--preset``/``--model_cfg``/``--vocab`` (and ``--device``), saying which preset the
    shapes matched."""
    from flowtts.checkpoints.loader import load, read_metadata

    preset = args.preset
    if getattr(args, "model_cfg", None):  # upstream: the model config file wins over the architecture's name
        from flowtts.checkpoints.model_config import read_model_config

        config = read_model_config(args.model_cfg)
        own = args.model.startswith("builtin") or (
            args.model.endswith(".safetensors") and os.path.isfile(args.model) and read_metadata(args.model)
        )
        if own:
            if not getattr(args, "quiet", False):
                print(f"--model_cfg ignored: {args.model} carries its own architecture", file=sys.stderr)
        else:
            preset = config
    model = load(args.model, preset=preset, vocab=args.vocab, device=getattr(args, "device", None) or "cpu")
    if getattr(model, "preset", None) and args.preset is None and not getattr(args, "quiet", False):
        print(f"using preset {model.preset} (matched by parameter shapes)", file=sys.stderr)
    return model


def _options(model, args: argparse.Namespace):
    """The model's recommended :class:`~flowtts.infer.InferenceOptions` with the command's sampling options
    (those the command has and was given) on top."""
    from flowtts.infer import recommended_options

    names = {
        "steps": "steps",
        "cfg": "cfg_strength",
        "sway": "sway_sampling_coef",
        "speed": "speed",
        "batch_size": "batch_size",
        "dtype": "dtype",
        "fix_duration": "fix_duration",
        "remove_silence": "remove_silence",
        "target_rms": "target_rms",
        "cross_fade": "cross_fade_seconds",
    }
    return recommended_options(
        model, **{field: getattr(args, arg) for arg, field in names.items() if hasattr(args, arg)}
    )


def _infer(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from flowtts.audio.io import write_audio
    from flowtts.audio.vocoders import load_vocoder
    from flowtts.infer import load_reference, save_mel_png, synthesize
    from flowtts.voices import VOICE_TAG, Voice, split_voices

    if args.gen_file is not None:  # read whole, as upstream's --gen_file
        if not os.path.isfile(args.gen_file):
            raise UserError(f"--gen-file not found: {args.gen_file}")
        with open(args.gen_file, encoding="utf-8") as f:
            args.text = f.read()
    if args.output is not None and args.output_file is not None and args.output_dir is None:
        args.output_dir, args.output = args.output, None  # upstream's -o DIR -w FILE
    if args.output_dir is not None or args.output_file is not None:
        if args.output is not None:
            raise UserError("give -o or --output-dir/--output-file, not both")
        args.output = os.path.join(args.output_dir or ".", args.output_file or "out.wav")
        args.make_output_dir = True  # created, as upstream
    voices = _apply_config(args) if args.config else {}
    _resolve_checkpoint(args)
    if args.vocoder_name == "bigvgan" and args.load_vocoder_from_local:
        raise UserError(
            "BigVGAN vocoders are not supported: use Griffin-Lim (default) or a local Vocos (--vocoder-path)"
        )
    if args.load_vocoder_from_local and args.vocoder_path is None:
        args.vocoder_path = UPSTREAM_VOCOS_DIR
    if args.vocoder_name is not None and args.vocoder_path is None and not args.quiet:
        print(
            f"--vocoder_name {args.vocoder_name}: flowtts downloads nothing, so the Griffin-Lim vocoder is used "
            "(--vocoder-path DIR or --load_vocoder_from_local for a Vocos on disk)",
            file=sys.stderr,
        )
    for option, value in INFER_DEFAULTS.items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    if args.text is None and args.text_file is None:
        raise UserError("give --text or --text-file (or gen_text / gen_file in --config)")
    if args.text is not None and not args.text.strip():
        raise UserError("--text is empty")
    pieces = None  # (voice, text) pieces of a config's text with [voice] tags
    if args.config and (voices or (args.text is not None and VOICE_TAG.search(args.text))):
        if args.text is None:
            raise UserError("the voices of --config go with one text (--text, gen_text or gen_file), not --text-file")
        pieces = split_voices(args.text, voices)
        if not pieces:
            raise UserError("the text has nothing to say besides its voice tags")
    texts = [args.text] if args.text is not None else _read_lines(args.text_file)
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    for flag, value in (
        ("--speed", args.speed),
        ("--target-rms", args.target_rms),
        ("--fix-duration", args.fix_duration),
    ):
        if value is not None and not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    if args.cross_fade < 0:
        raise UserError(f"--cross-fade must be >= 0, got {args.cross_fade}")
    if args.threads:
        torch.set_num_threads(args.threads)
    streaming = args.output == "-"
    if streaming:
        if args.text is None or pieces is not None:
            raise UserError("-o - streams one text in one voice (--text or --gen-file, no voice tags)")
        if args.remove_silence or args.save_mel:
            raise UserError("-o - cannot be combined with --remove-silence or --save-mel (they need the whole output)")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if args.text is not None and not os.path.isdir(out_dir) and not getattr(args, "make_output_dir", False):
        raise UserError(f"output directory does not exist: {os.path.dirname(args.output)}")
    if args.text_file is not None and os.path.isfile(args.output):
        raise UserError(f"with --text-file, -o must be a directory, and {args.output} is a file")

    model = _load_model(args)
    rate = model.mel_spec.target_sample_rate
    options = _options(model, args)

    def show(text):
        if not args.quiet:
            print(
                f"reference transcribed (pocketsphinx, English only; check it or pass --ref-text): {text!r}",
                file=sys.stderr,
            )

    voices = {"main": Voice(args.ref_audio, args.ref_text), **voices}
    used = [name for name in voices if pieces is not None and name in {v for v, _ in pieces}] or ["main"]
    references, voice_options = {}, {}
    for name in used:
        voice = voices[name]
        voice_options[name] = options if voice.speed is None else dataclasses.replace(options, speed=voice.speed)
        try:
            references[name] = load_reference(
                model, voice.ref_audio, voice.ref_text, voice_options[name], on_transcript=show
            )
        except ImportError:
            raise UserError(
                "--ref-text is required with --ref-audio (the transcript of the reference clip); "
                "or pip install 'flowtts[eval]' to transcribe English references offline"
            ) from None
    vocoder = load_vocoder(model.mel_spec, args.vocoder_path)
    if streaming:  # raw 16-bit PCM on stdout, each piece as soon as it is final
        from flowtts.infer import stream

        if not args.quiet:
            print(f"streaming 16-bit mono PCM at {rate} Hz to stdout", file=sys.stderr)
        out = sys.stdout.buffer
        for wave in stream(model, references["main"], args.text, vocoder=vocoder, options=options, seed=args.seed):
            out.write((wave.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().tobytes())
            out.flush()
        return 0
    if pieces is None:
        seeds = [args.seed + i for i in range(len(texts))] if args.seed is not None else None
        results = synthesize(
            model, references["main"], texts, vocoder=vocoder, options=options, seeds=seeds, progress=not args.quiet
        )
    else:  # each piece in its voice, then joined, as upstream
        parts = []
        for i, (name, piece) in enumerate(pieces):
            seeds = [args.seed + i] if args.seed is not None else None
            kwargs = dict(vocoder=vocoder, options=voice_options[name], seeds=seeds, progress=False)
            parts += synthesize(model, references[name], [piece], **kwargs)
            if not args.quiet:
                print(f"[{name}] {piece[:60]!r}: seed {parts[-1].seed}", file=sys.stderr)
        joined = dataclasses.replace(
            parts[0],
            text=args.text,
            wave=torch.cat([p.wave for p in parts]),
            mel=torch.cat([p.mel for p in parts], dim=-1),
        )
        results = [joined]

    if args.text is not None:
        os.makedirs(out_dir, exist_ok=True)
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
            what = f"seed {result.seed}" if pieces is None else f"{len(pieces)} pieces from seed {result.seed}"
            print(f"{target}: {seconds:.2f} s, {what}", file=sys.stderr)
    return 0


def _spans(value: str) -> tuple[tuple[float, float], ...]:
    """argparse type of ``edit --parts``: comma-separated START-END seconds."""
    number = r"\s*(\d+(?:\.\d*)?|\.\d+)\s*"
    spans = []
    for item in value.split(","):
        match = re.fullmatch(f"{number}-{number}", item)
        if match is None:
            raise argparse.ArgumentTypeError(f"expected comma-separated START-END seconds (e.g. 1.4-2.4), got {item!r}")
        spans.append((float(match[1]), float(match[2])))
    return tuple(spans)


def _edit(args: argparse.Namespace) -> int:
    import torch

    from flowtts.audio.io import read_audio, write_audio
    from flowtts.audio.vocoders import load_vocoder
    from flowtts.edit import edit_speech
    from flowtts.infer import save_mel_png

    if not args.text.strip():
        raise UserError("--text is empty")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not args.target_rms > 0:
        raise UserError(f"--target-rms must be positive, got {args.target_rms}")
    if args.durations is not None and len(args.durations) != len(args.parts):
        raise UserError(f"--durations gives {len(args.durations)} lengths for {len(args.parts)} --parts")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UserError(f"output directory does not exist: {os.path.dirname(args.output)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = _load_model(args)
    rate = model.mel_spec.target_sample_rate
    wave, _ = read_audio(args.audio, rate)
    options = _options(model, args)
    result = edit_speech(
        model,
        wave,
        args.text,
        args.parts,
        durations=args.durations,
        vocoder=load_vocoder(model.mel_spec, args.vocoder_path),
        options=options,
        seed=args.seed,
        progress=not args.quiet,
    )
    write_audio(args.output, result.wave, rate)
    if args.save_mel:
        save_mel_png(result.mel, args.save_mel, title=args.text[:60])
    if not args.quiet:
        frame = model.mel_spec.hop_length / rate
        spans = ", ".join(f"{a * frame:.2f}-{b * frame:.2f} s" for a, b in result.spans)
        seconds = result.wave.numel() / rate
        print(f"{args.output}: {seconds:.2f} s, new speech at {spans}, seed {result.seed}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from flowtts.checkpoints.export import export_upstream

    model = _load_model(args)
    paths = export_upstream(model, args.out, name=args.name, dtype=args.dtype, overwrite=args.force)
    for note in paths["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {paths['weights']}, {paths['vocab']}, {paths['config']}; with F5-TTS:")
    print(
        f"  f5-tts_infer-cli --model_cfg {paths['config']} --ckpt_file {paths['weights']} "
        f"--vocab_file {paths['vocab']} --ref_audio REF.wav --ref_text '...' --gen_text '...'"
    )
    return 0


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
    from flowtts.train.trainer import TrainConfig, train
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
        steps=args.steps,
        lr=args.lr,
        warmup=args.warmup,
        batch_frames=args.batch_frames,
        max_samples=args.max_samples,
        grad_clip=args.grad_clip,
        ema_decay=args.ema_decay,
        save_every=args.save_every,
        eval_every=args.eval_every,
        log_every=args.log_every,
        seed=args.seed,
        bf16=args.bf16,
        isolate_batch=args.isolate_batch,
        grad_accum=args.grad_accum,
        snapshot_every=args.snapshot_every,
        keep_snapshots=args.keep_snapshots,
        log_samples=args.log_samples,
    )
    summary = train(model, dataset, args.out, config, held_out=held_out, progress=not args.quiet)
    print(f"step {summary['step']}, loss {summary['loss']:.4f}, {summary['seconds']:.0f} s; weights in {args.out}")
    return 0


def _start_run(args: argparse.Namespace) -> None:
    """What distill and reward do first: check --report-prompts, keep freed memory, set the thread count."""
    import torch

    from flowtts.utils.memory import retain_freed_memory

    if args.report_prompts < 0:
        raise UserError(f"--report-prompts must be >= 0 (0: no report), got {args.report_prompts}")
    retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)


def _distill(args: argparse.Namespace) -> int:
    import copy

    import torch

    from flowtts.checkpoints.loader import load
    from flowtts.train.data import MelDataset
    from flowtts.train.distill import DistillConfig, distill, draw_prompts, evaluate, report

    _start_run(args)
    if args.eval_every < 0 or args.eval_prompts < 1:
        raise UserError(
            f"--eval-every must be >= 0 and --eval-prompts >= 1, got {args.eval_every} and {args.eval_prompts}"
        )
    config = DistillConfig(
        student_steps=args.student_steps,
        teacher_steps=args.teacher_steps,
        teacher_cfg=args.teacher_cfg,
        student_cfg=args.teacher_cfg if args.keep_guidance else 0.0,
        student_grid=args.student_grid,
        student_times=args.student_times,
        velocity_steps=args.velocity_steps,
        segment_steps=args.segment_steps,
        segment_start=args.segment_start,
        teacher_pool=args.teacher_pool,
        student_dropout=not args.no_dropout,
        grad_checkpoint=args.grad_checkpoint,
        backprop_steps=args.backprop_steps,
        dtype=args.dtype,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        ema_decay=args.ema_decay,
        save_every=args.save_every,
        log_every=args.log_every,
        seed=args.seed,
    )
    teacher = load(args.teacher, preset=args.preset, vocab=args.vocab)
    student = load(args.student, preset=args.preset, vocab=args.vocab) if args.student else copy.deepcopy(teacher)
    dataset = MelDataset(args.data)
    if len(dataset) == 0:
        raise UserError(f"{args.data} has no usable rows")
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    held = MelDataset(args.heldout) if args.heldout else dataset
    eval_prompts = None
    if args.eval_every:
        first = args.report_prompts if args.eval_start is None else args.eval_start
        rows = list(range(first, min(first + args.eval_prompts, len(held))))
        if not rows:
            raise UserError(
                f"--eval-every: the held-out set has {len(held)} rows, none from --eval-start {first} on "
                "(the evaluation prompts follow the report's unless --eval-start says otherwise)"
            )
        eval_prompts = draw_prompts(held, rows, teacher.num_channels, config, torch.Generator().manual_seed(1))
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
    n = min(args.report_prompts, len(held))
    prompts = draw_prompts(held, list(range(n)), teacher.num_channels, config, torch.Generator().manual_seed(0))
    final = load(f"{args.out}/student.safetensors")
    rows, mels = evaluate(teacher, final, prompts, config)
    print(report(rows, mels, args.out))
    return 0


def _reward(args: argparse.Namespace) -> int:
    import torch

    from flowtts.checkpoints.loader import load
    from flowtts.train.data import MelDataset
    from flowtts.train.distill import draw_prompts
    from flowtts.train.reward import RewardConfig, evaluate, finetune, format_rows, resolve_reward
    from flowtts.utils.files import atomic_output

    _start_run(args)
    config = RewardConfig(
        reward=args.reward,
        sample_steps=args.sample_steps,
        cfg_strength=args.cfg,
        backprop_steps=args.backprop_steps,
        grad_checkpoint=args.grad_checkpoint,
        anchor_weight=args.anchor_weight,
        dropout=args.dropout,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        ema_decay=args.ema_decay,
        save_every=args.save_every,
        log_every=args.log_every,
        seed=args.seed,
    )
    model = load(args.model, preset=args.preset, vocab=args.vocab)
    reward = resolve_reward(config.reward, model)
    sampling = config.sampling(model)
    dataset = MelDataset(args.data)
    if len(dataset) == 0:
        raise UserError(f"{args.data} has no usable rows")
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    summary = finetune(model, dataset, args.out, config, progress=not args.quiet, max_seconds=max_seconds)
    print(
        f"fine-tuned {summary['step']} steps in {summary['seconds']:.0f} s, "
        f"last batch reward {summary['reward']:.5f}, loss {summary['loss']:.5f}"
    )
    if args.report_prompts == 0:
        return 0
    held = MelDataset(args.heldout) if args.heldout else dataset
    n = min(args.report_prompts, len(held))
    prompts = draw_prompts(held, list(range(n)), model.num_channels, config, torch.Generator().manual_seed(0))
    before = load(args.model, preset=args.preset, vocab=args.vocab)
    after = load(os.path.join(args.out, "model.safetensors"))
    models = {"before": (before, sampling), "after (EMA)": (after, sampling)}
    text = format_rows(evaluate(models, prompts, reward, reference="before"), "before")
    with atomic_output(os.path.join(args.out, "report.txt")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


def _average(args: argparse.Namespace) -> int:
    import json

    from flowtts.checkpoints.average import average
    from flowtts.checkpoints.loader import load, save

    if os.path.exists(args.output) and not args.force:
        raise UserError(f"{args.output} exists (--force overwrites it)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UserError(f"output directory does not exist: {os.path.dirname(args.output)}")
    models = [load(path) for path in args.models]
    weights = args.weights if args.weights is not None else [1.0] * len(models)
    model = average(models, weights)
    extra = {"averaged_from": json.dumps([[path, w] for path, w in zip(args.models, weights)])}
    raw = (getattr(models[0], "metadata", None) or {}).get("distill_config")
    if raw:
        extra["distill_config"] = raw  # all inputs sample alike (checked), so the student's settings carry over
    save(model, args.output, dtype=args.dtype, extra=extra)
    print(f"{args.output}: the {'weighted ' if args.weights else ''}average of {len(models)} models")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import csv

    import torch

    from flowtts.audio.io import read_audio
    from flowtts.audio.vocoders import load_vocoder
    from flowtts.checkpoints.loader import builtin_reference, load
    from flowtts.eval.asr import PocketSphinx
    from flowtts.eval.report import format_scores, score_model, score_recordings, speaker_similarity_or_none
    from flowtts.infer import prepare_reference
    from flowtts.train.data import read_metadata

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    if args.cross_sentence and (args.ref_audio or args.ref_text):
        raise UserError("--cross-sentence takes each prompt from the held-out set: drop --ref-audio/--ref-text")
    if bool(args.ref_audio) != bool(args.ref_text):
        raise UserError("--ref-audio and --ref-text go together (the clip and its transcript)")
    rows = read_metadata(args.heldout, args.layout)[: args.n]
    if not rows or (args.cross_sentence and len(rows) < 2):
        raise UserError(f"{args.heldout} has {len(rows)} usable rows; --cross-sentence needs at least 2")
    root = os.path.dirname(os.path.abspath(args.heldout))
    texts = [text for _, _, text in rows]
    audio = [os.path.join(root, path) for _, path, _ in rows]
    if args.cross_sentence:  # sentence i is said in the voice of recording i+1, which prompts with its transcript
        prompts = [(audio[(i + 1) % len(rows)], texts[(i + 1) % len(rows)]) for i in range(len(rows))]
    else:
        clip = (args.ref_audio, args.ref_text) if args.ref_audio else builtin_reference()
        prompts = [clip] * len(rows)
    if args.threads:
        torch.set_num_threads(args.threads)
    asr = PocketSphinx()
    scores, first = [], None
    for spec in args.model:
        model = load(spec, preset=args.preset, vocab=args.vocab, device=args.device or "cpu")
        rate = model.mel_spec.target_sample_rate
        options = _options(model, args)
        cache = {}
        for clip in dict.fromkeys(prompts):
            cache[clip] = prepare_reference(model, read_audio(clip[0], rate)[0], clip[1], options)
        references = [cache[clip] for clip in prompts]
        similarity = speaker_similarity_or_none(model.mel_spec)
        label = f"{spec} ({options.steps} steps, cfg {options.cfg_strength:g})"
        save = None
        if args.out and args.save_audio:
            from flowtts.audio.io import write_audio

            folder = os.path.join(args.out, f"system{len(scores)}")
            os.makedirs(folder, exist_ok=True)

            def save(i, utterance, folder=folder):
                write_audio(os.path.join(folder, f"{i:04d}.wav"), utterance.wave, utterance.sample_rate)

        scores.append(
            score_model(
                model,
                texts,
                references,
                asr=asr,
                options=options,
                vocoder=load_vocoder(model.mel_spec, args.vocoder_path),
                similarity=similarity,
                seeds=[args.seed + i for i in range(len(texts))],
                label=label,
                progress=not args.quiet,
                on_utterance=save,
            )
        )
        first = first or (model, references, similarity)
    if not args.no_recordings:
        model, references, similarity = first
        rate = model.mel_spec.target_sample_rate
        waves = [read_audio(path, rate)[0] for path in audio]
        scores.append(
            score_recordings(
                waves, texts, references, sample_rate=rate, mel_spec=model.mel_spec, asr=asr, similarity=similarity
            )
        )
    table = format_scores(scores)
    if first[2] is None and not args.quiet:
        print(
            "SIM left out: the speaker encoder needs resemblyzer (pip install --no-deps resemblyzer)", file=sys.stderr
        )
    print(table)
    if args.show:
        for i, text in enumerate(texts):
            print(f"REF  {text}")
            for score in scores:
                print(f"     {score.transcripts[i]!r}  <- {score.label}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "eval.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, list(scores[0].row()))
            writer.writeheader()
            writer.writerows(s.row() for s in scores)
        with open(os.path.join(args.out, "transcripts.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["system", "index", "text", "heard", "sim"])
            for score in scores:
                for i, text in enumerate(texts):
                    sim = f"{score.sims[i]:.4f}" if score.sims else ""
                    writer.writerow([score.label, i, text, score.transcripts[i], sim])
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from flowtts.checkpoints.inspect import format_facts, model_facts

    _resolve_checkpoint(args)
    model = _load_model(argparse.Namespace(**{**vars(args), "quiet": True}))
    path = args.model if not args.model.startswith("builtin") else None
    if path is None:
        from flowtts.checkpoints.loader import builtin_path

        path = builtin_path(args.model)
    facts = model_facts(model, path)
    print(json.dumps(facts, indent=2) if args.json else format_facts(facts))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import torch

    from flowtts.audio.vocoders import load_vocoder
    from flowtts.infer import load_reference
    from flowtts.serve import SpeechServer

    _resolve_checkpoint(args)
    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.max_requests is not None and args.max_requests < 1:
        raise UserError(f"--max-requests must be >= 1, got {args.max_requests}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = _load_model(args)
    options = _options(model, args)
    try:
        reference = load_reference(model, args.ref_audio, args.ref_text, options)
    except ImportError:
        raise UserError("--ref-text is required with --ref-audio (the transcript of the reference clip)") from None
    try:
        server = SpeechServer(
            model,
            reference,
            load_vocoder(model.mel_spec, args.vocoder_path),
            options,
            host=args.host,
            port=args.port,
            seed=args.seed,
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = server.address
    rate = model.mel_spec.target_sample_rate
    print(f"serving on {host}:{port}: send UTF-8 text, get float32 mono at {rate} Hz then END", file=sys.stderr)
    try:
        server.serve_forever(args.max_requests)
    except KeyboardInterrupt:
        pass
    return 0


def _add_architecture_options(parser: argparse.ArgumentParser) -> None:
    """What an official checkpoint needs besides its weights: its architecture and its vocabulary."""
    parser.add_argument("--preset", help="architecture of an official checkpoint (default: matched by shapes)")
    parser.add_argument(
        "--model-cfg",
        "--model_cfg",
        help="F5-TTS model config (configs/*.yaml) of an official checkpoint's architecture",
    )
    parser.add_argument("-v", "--vocab", "--vocab_file", help="vocab.txt the official checkpoint was trained with")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtts", description="F5-TTS-compatible flow-matching TTS")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the main job on the built-in models: synthesise, distil a student for a few minutes, report"
    )
    demo.add_argument("--out", default="flowtts_demo", help="where the wavs, report and distillation run go")
    demo.add_argument("--distill-seconds", type=float, default=150.0, help="wall time of the fresh distillation")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None)
    demo.set_defaults(func=_demo)

    infer = sub.add_parser("infer", help="synthesise speech from text and a reference clip")
    # Upstream F5-TTS's spellings (f5-tts_infer-cli) are accepted where they mean the same thing.
    infer.add_argument(
        "-c",
        "--config",
        help="F5-TTS inference config (TOML: model, ckpt_file, ref_audio, ref_text, gen_text, gen_file, "
        "[voices.NAME] ...); options given here win over it",
    )
    infer.add_argument(
        "-m",
        "--model",
        help="flowtts or F5-TTS checkpoint, or 'builtin' (default); with --ckpt_file, its architecture (as upstream)",
    )
    infer.add_argument(
        "-p", "--ckpt_file", "--ckpt-file", dest="ckpt_file", help="the checkpoint (upstream's spelling)"
    )
    _add_architecture_options(infer)
    infer.add_argument("-r", "--ref-audio", "--ref_audio", help="reference clip (any format soundfile reads)")
    infer.add_argument(
        "-s",
        "--ref-text",
        "--ref_text",
        help="transcript of the reference clip (default: transcribed offline if pocketsphinx is installed, English)",
    )
    text = infer.add_mutually_exclusive_group()
    text.add_argument("-t", "--text", "--gen_text", help="text to speak")
    text.add_argument("--text-file", help="one utterance per line; -o is then a directory")
    text.add_argument(
        "-f", "--gen-file", "--gen_file", help="a text file read whole as one text (upstream's --gen_file)"
    )
    infer.add_argument(
        "-o",
        "--output",
        help="output wav, default out.wav (a directory with --text-file, or with --output-file as upstream's -o; "
        "'-': raw 16-bit PCM on stdout, streamed chunk by chunk)",
    )
    infer.add_argument("--output-dir", "--output_dir", help="upstream's spelling: -o is OUTPUT_DIR/OUTPUT_FILE")
    infer.add_argument("-w", "--output-file", "--output_file", help="upstream's spelling: -o is OUTPUT_DIR/OUTPUT_FILE")
    infer.add_argument(
        "--steps",
        "--nfe_step",
        type=int,
        help="solver steps (default 32, or what a distilled student was trained for)",
    )
    infer.add_argument(
        "--cfg", "--cfg_strength", type=float, help="classifier-free guidance strength (default 2, students: theirs)"
    )
    infer.add_argument(
        "--sway", "--sway_sampling_coef", type=float, help="sway sampling coefficient (default -1, students: theirs)"
    )
    infer.add_argument("--speed", type=float, help="speaking rate, default 1 (estimated durations are divided by it)")
    infer.add_argument(
        "--fix-duration",
        "--fix_duration",
        type=float,
        help="seconds of reference + generated speech for each text (replaces the estimate; no chunking)",
    )
    infer.add_argument(
        "--remove-silence", "--remove_silence", action="store_true", help="shorten silences over 1 s in the output"
    )
    infer.add_argument(
        "--target-rms",
        "--target_rms",
        type=float,
        help="quieter references are raised to this RMS, default 0.1 (and the output lowered back)",
    )
    infer.add_argument(
        "--cross-fade",
        "--cross_fade_duration",
        type=float,
        help="seconds of cross-fade between the chunks of a long text, default 0.15",
    )
    infer.add_argument("--seed", type=int, help="seed of the first utterance (the n-th uses seed + n - 1)")
    infer.add_argument("--batch-size", type=int, help="utterances per sample() call, default 4")
    infer.add_argument("--device", help="default cpu")
    infer.add_argument("--dtype", choices=DTYPE_CHOICES, help="network precision (autocast)")
    infer.add_argument("--threads", type=int)
    infer.add_argument("--vocoder-path", help="local Vocos directory (config.yaml + weights); default Griffin-Lim")
    infer.add_argument(
        "--vocoder_name",
        "--vocoder-name",
        choices=["vocos", "bigvgan"],
        help="upstream's option: noted, nothing downloads",
    )
    infer.add_argument(
        "--load_vocoder_from_local",
        "--load-vocoder-from-local",
        action="store_true",
        help=f"a Vocos in upstream's local directory ({UPSTREAM_VOCOS_DIR}) unless --vocoder-path",
    )
    infer.add_argument("--save-mel", help="also write the spectrogram as a PNG (a directory's files with --text-file)")
    infer.add_argument("-q", "--quiet", action="store_true")
    infer.set_defaults(func=_infer)

    ed = sub.add_parser(
        "edit", help="make a recording say new words in chosen spans, keeping the rest (F5-TTS's speech editing)"
    )
    ed.add_argument("--audio", required=True, help="the recording to edit (any format soundfile reads)")
    ed.add_argument("--text", required=True, help="transcript of the whole recording after the edit")
    ed.add_argument(
        "--parts",
        required=True,
        type=_spans,
        help="spans to replace, START-END seconds, comma-separated (1.4-2.4,4-4.9)",
    )
    ed.add_argument(
        "--durations", type=_times, help="new length in seconds of each part, comma-separated (default: their own)"
    )
    ed.add_argument("-o", "--output", default="edited.wav")
    ed.add_argument("--model", "--ckpt_file", default="builtin", help="flowtts or F5-TTS checkpoint, or 'builtin'")
    _add_architecture_options(ed)
    ed.add_argument("--steps", "--nfe_step", type=int, help="solver steps (default 32, or a student's own)")
    ed.add_argument("--cfg", "--cfg_strength", type=float, help="guidance strength (default 2, or a student's own)")
    ed.add_argument("--sway", "--sway_sampling_coef", type=float, help="sway sampling coefficient (default -1)")
    ed.add_argument(
        "--target-rms", "--target_rms", type=float, default=0.1, help="quieter recordings are raised to this RMS"
    )
    ed.add_argument("--seed", type=int)
    ed.add_argument("--device", default="cpu")
    ed.add_argument("--dtype", choices=DTYPE_CHOICES, help="network precision (autocast)")
    ed.add_argument("--threads", type=int)
    ed.add_argument("--vocoder-path", help="local Vocos directory (config.yaml + weights); default Griffin-Lim")
    ed.add_argument("--save-mel", help="also write the edited spectrogram as a PNG")
    ed.add_argument("-q", "--quiet", action="store_true")
    ed.set_defaults(func=_edit)

    av = sub.add_parser("average", help="average the weights of models that share a starting point (a model soup)")
    av.add_argument("models", nargs="+", help="two or more flowtts files of one architecture")
    av.add_argument("-o", "--output", required=True, help="the averaged model (.safetensors)")
    av.add_argument("--weights", type=_times, help="comma-separated positive weights, one per model (default: equal)")
    av.add_argument("--dtype", choices=DTYPE_CHOICES, help="stored precision (default float32)")
    av.add_argument("--force", action="store_true", help="overwrite --output")
    av.set_defaults(func=_average)

    ex = sub.add_parser("export", help="write a model in F5-TTS's layout (weights, vocab.txt, model config)")
    ex.add_argument("model", help="flowtts file, official checkpoint, or 'builtin' / 'builtin:student'")
    ex.add_argument("-o", "--out", required=True, help="directory for NAME.safetensors, vocab.txt, NAME.yaml")
    ex.add_argument("--name", default="model", help="file stem and the config's model name (default: model)")
    _add_architecture_options(ex)
    ex.add_argument("--dtype", choices=DTYPE_CHOICES, help="stored precision (default: as loaded)")
    ex.add_argument("--force", action="store_true", help="replace existing files")
    ex.set_defaults(func=_export)

    sv = sub.add_parser("serve", help="a speech server on a TCP socket (F5-TTS's socket_server protocol)")
    sv.add_argument("-m", "--model", help="model file, builtin (default) or builtin:student")
    sv.add_argument("-p", "--ckpt_file", help="checkpoint (upstream's spelling; then --model names its architecture)")
    _add_architecture_options(sv)
    sv.add_argument("-r", "--ref-audio", "--ref_audio", help="reference clip (default: the built-in one)")
    sv.add_argument("-s", "--ref-text", "--ref_text", help="its transcript")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=9998, help="port (upstream's default; 0: any free one)")
    sv.add_argument("--steps", "--nfe_step", type=int, help="solver steps (default 32, or a student's own)")
    sv.add_argument("--cfg", "--cfg_strength", type=float, help="guidance strength (default 2, or a student's own)")
    sv.add_argument("--sway", "--sway_sampling_coef", type=float)
    sv.add_argument("--speed", type=float)
    sv.add_argument("--target-rms", "--target_rms", type=float)
    sv.add_argument("--cross-fade", "--cross_fade_duration", type=float, default=0.15)
    sv.add_argument("--dtype", choices=DTYPE_CHOICES)
    sv.add_argument("--seed", type=int, help="seed of every text's first chunk (default: random per text)")
    sv.add_argument("--vocoder-path", help="local Vocos directory (default: Griffin-Lim)")
    sv.add_argument("--max-requests", type=int, help="stop after this many texts (default: serve until Ctrl-C)")
    sv.add_argument("--device")
    sv.add_argument("--threads", type=int)
    sv.set_defaults(func=_serve)

    info = sub.add_parser("info", help="what a model file holds: architecture, size, vocabulary, sampling, origin")
    info.add_argument("model", nargs="?", default="builtin", help="model file, or builtin / builtin:student")
    info.add_argument("-p", "--ckpt_file", help="checkpoint (upstream's spelling; then MODEL names its architecture)")
    _add_architecture_options(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    ev = sub.add_parser(
        "eval", help="word error rate and speaker similarity of models on held-out sentences (F5-TTS's eval)"
    )
    ev.add_argument("--model", nargs="+", default=["builtin"], help="one or more models (default: builtin)")
    ev.add_argument("--preset", help="architecture of official checkpoints")
    ev.add_argument("--vocab", help="vocab.txt of official checkpoints")
    ev.add_argument("--heldout", required=True, help="metadata of held-out recordings (audio_file|text)")
    ev.add_argument("--layout", choices=("f5-tts", "ljspeech"), default="f5-tts")
    ev.add_argument("--n", type=int, default=20, help="sentences (the first N rows)")
    ev.add_argument(
        "--cross-sentence",
        action="store_true",
        help="say each sentence in the voice of the next held-out recording (as F5-TTS's test sets); "
        "default: one reference clip",
    )
    ev.add_argument("--ref-audio", help="the reference clip (default: the built-in one)")
    ev.add_argument("--ref-text", help="its transcript")
    ev.add_argument("--steps", "--nfe_step", type=int, help="default 32, or a distilled student's own")
    ev.add_argument("--cfg", "--cfg_strength", type=float, help="default 2, or a distilled student's own")
    ev.add_argument("--sway", "--sway_sampling_coef", type=float)
    ev.add_argument("--dtype", choices=DTYPE_CHOICES)
    ev.add_argument("--seed", type=int, default=0, help="sentence i uses seed + i")
    ev.add_argument("--vocoder-path", help="local Vocos directory (default: Griffin-Lim)")
    ev.add_argument("--no-recordings", action="store_true", help="do not score the held-out recordings themselves")
    ev.add_argument("--out", help="write eval.csv and transcripts.csv here")
    ev.add_argument("--save-audio", action="store_true", help="with --out: keep every synthesis as a wav")
    ev.add_argument("--show", action="store_true", help="print what the recogniser heard")
    ev.add_argument("--device")
    ev.add_argument("--threads", type=int)
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=_evaluate)

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
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("-q", "--quiet", action="store_true")
    synth.set_defaults(func=_data_synth)

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
    tr.add_argument("--steps", type=int, default=10_000)
    tr.add_argument("--lr", "--learning_rate", type=float, default=7.5e-5)
    tr.add_argument("--warmup", "--num_warmup_updates", type=int, default=1_000)
    tr.add_argument("--batch-frames", type=int, default=8_000, help="frames per batch, padding included")
    tr.add_argument("--max-samples", "--max_samples", type=int, default=32, help="utterances per batch at most")
    tr.add_argument(
        "--grad-accum",
        "--grad_accumulation_steps",
        type=int,
        default=1,
        help="frame batches per optimiser step (their mean losses averaged, as F5-TTS's grad_accumulation_steps)",
    )
    tr.add_argument("--grad-clip", "--max_grad_norm", type=float, default=1.0)
    tr.add_argument("--ema-decay", type=float, default=0.999)
    tr.add_argument(
        "--save-every", "--last_per_updates", type=int, default=500, help="steps between resume checkpoints"
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
    tr.add_argument("--log-every", type=int, default=10)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    tr.add_argument("--isolate-batch", action="store_true", help="mask padding in attention (slower)")
    tr.add_argument("--threads", type=int)
    tr.add_argument("-q", "--quiet", action="store_true")
    tr.set_defaults(func=_train)

    ds = sub.add_parser("distill", help="distil a many-step teacher into a few-step student")
    ds.add_argument("--teacher", default="builtin", help="teacher checkpoint (flowtts, official, or 'builtin')")
    ds.add_argument("--student", help="initial student (default: a copy of the teacher)")
    ds.add_argument("--preset", help="architecture of official checkpoints")
    ds.add_argument("--vocab", help="vocab.txt of official checkpoints")
    ds.add_argument("--data", required=True, help="prepared dataset the prompts come from")
    ds.add_argument("--heldout", help="prepared held-out set for the final report (default: --data)")
    ds.add_argument("--out", required=True)
    ds.add_argument("--student-steps", type=int, default=4)
    ds.add_argument("--teacher-steps", type=int, default=32)
    ds.add_argument("--teacher-cfg", type=float, default=2.0)
    ds.add_argument("--keep-guidance", action="store_true", help="student keeps CFG (default: distilled away)")
    ds.add_argument("--student-grid", choices=["uniform", "epss", "sway", "custom"], default="uniform")
    ds.add_argument(
        "--student-times", type=_times, help="the custom grid: comma-separated times, 0 to 1 (e.g. 0,0.02,0.08,0.3,1)"
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
    ds.add_argument("--grad-checkpoint", action="store_true")
    ds.add_argument("--backprop-steps", type=int)
    ds.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        help="precision of the teacher's and student's networks while distilling (autocast; default float32; "
        "float16 needs a GPU); ODE states, losses and the report stay float32",
    )
    ds.add_argument("--steps", type=int, default=500)
    ds.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    ds.add_argument("--batch-size", type=int, default=4)
    ds.add_argument("--lr", type=float, default=5e-5)
    ds.add_argument("--warmup", type=int, default=20)
    ds.add_argument("--ema-decay", type=float, default=0.99)
    ds.add_argument("--save-every", type=int, default=50)
    ds.add_argument("--log-every", type=int, default=5)
    ds.add_argument("--report-prompts", type=int, default=8, help="held-out prompts in the final report (0: none)")
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
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--threads", type=int)
    ds.add_argument("-q", "--quiet", action="store_true")
    ds.set_defaults(func=_distill)

    rw = sub.add_parser("reward", help="fine-tune a model to raise a differentiable reward of its own samples")
    rw.add_argument("--model", default="builtin", help="model to fine-tune (flowtts, official, 'builtin', ...)")
    rw.add_argument("--preset", help="architecture of an official checkpoint")
    rw.add_argument("--vocab", help="vocab.txt of an official checkpoint")
    rw.add_argument("--data", required=True, help="prepared dataset the prompts come from")
    rw.add_argument("--heldout", help="prepared held-out set for the final report (default: --data)")
    rw.add_argument("--out", required=True, help="run directory (resumes from its last.pt)")
    rw.add_argument(
        "--reward",
        default="speaker",
        help="'speaker' (speaker similarity to the reference), 'timbre', or module:function returning (b,) rewards",
    )
    rw.add_argument("--sample-steps", type=int, help="solver steps (default: the model's own, e.g. a student's)")
    rw.add_argument("--cfg", type=float, help="guidance strength (default: the model's own)")
    rw.add_argument("--backprop-steps", type=int, help="gradients through the last this many solver steps")
    rw.add_argument("--grad-checkpoint", action="store_true", help="recompute each solver step in backward")
    rw.add_argument(
        "--anchor-weight", type=float, default=1.0, help="weight of the distance to the starting model's samples"
    )
    rw.add_argument("--dropout", action="store_true", help="keep dropout active while sampling")
    rw.add_argument("--steps", type=int, default=200)
    rw.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    rw.add_argument("--batch-size", type=int, default=4)
    rw.add_argument("--lr", type=float, default=1e-5)
    rw.add_argument("--warmup", type=int, default=20)
    rw.add_argument("--ema-decay", type=float, default=0.99)
    rw.add_argument("--save-every", type=int, default=50)
    rw.add_argument("--log-every", type=int, default=1)
    rw.add_argument("--report-prompts", type=int, default=8, help="held-out prompts in the final report (0: none)")
    rw.add_argument("--seed", type=int, default=0)
    rw.add_argument("--threads", type=int)
    rw.add_argument("-q", "--quiet", action="store_true")
    rw.set_defaults(func=_reward)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="flowtts: %(message)s")
    try:
        return args.func(args)
    except (UserError, FileNotFoundError, FileExistsError, ValueError, ImportError) as exc:
        print(f"flowtts {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
