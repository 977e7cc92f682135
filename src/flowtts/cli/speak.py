"""``flowtts infer``, ``edit`` and ``serve``: speech from a model, a reference and a text."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from flowtts.cli.common import (
    UserError,
    add_architecture_options,
    add_continue_option,
    add_quantize_option,
    add_sampling_flags,
    check_sampling_flags,
    fill_defaults,
    load_model,
    load_vocoder,
    numbers,
    read_lines,
    resolve_checkpoint,
    sampling_options,
    say_clip_note,
    set_threads,
)

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
UPSTREAM_VOCOS_DIR = "../checkpoints/charactr/vocos-mel-24khz"  # where upstream's --load_vocoder_from_local looks


def _apply_config(args: argparse.Namespace) -> dict:
    """Fill the infer options not given from ``--config`` (F5-TTS's TOML); returns its extra voices."""
    from flowtts.cli.voices import read_config

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


def _infer(args: argparse.Namespace) -> int:
    """``flowtts infer``: settle the options, load the model and voices, speak, write."""
    from flowtts.cli.voices import MAIN, Voice
    from flowtts.synthesis.seeds import choose_seed

    voices = _settle_inputs(args)
    pieces, texts = _texts(args, voices)
    check_sampling_flags(args)
    set_threads(args)
    streaming = _check_outputs(args, pieces)
    model = load_model(args)
    options = sampling_options(model, args)
    if args.pipeline is not None:  # default: F5-TTS's for its checkpoints (flowtts.synthesis.pipeline)
        options = dataclasses.replace(options, pipeline=args.pipeline)
    voices = {MAIN: Voice(args.ref_audio, args.ref_text), **voices}
    used = [name for name in voices if pieces is not None and name in {v for v, _ in pieces}] or [MAIN]
    say_clip_note(model, args, has_clip=any(voices[name].ref_audio is not None for name in used))
    references, voice_options = _load_voices(model, args, {name: voices[name] for name in used}, options)
    vocoder = load_vocoder(model, args)
    _say_vocoder(args, vocoder)
    if args.seed == -1:  # F5-TTS's "random"; the seeds used are printed with each output
        args.seed = choose_seed(None)
    if streaming:
        return _stream(model, references[MAIN], vocoder, options, args)
    if pieces is None:
        from flowtts.synthesis import synthesize

        seeds = [args.seed + i for i in range(len(texts))] if args.seed is not None else None
        results = synthesize(
            model, references[MAIN], texts, vocoder=vocoder, options=options, seeds=seeds, progress=not args.quiet
        )
    else:  # each piece in its voice, the waves joined end to end, as upstream (and the app's multi-voice tab)
        from flowtts.synthesis.voices import piece_seeds, speak_pieces

        def said(name, piece, utterance):
            if not args.quiet:
                print(f"[{name}] {piece[:60]!r}: seed {utterance.seed}", file=sys.stderr)

        seeds = piece_seeds(args.seed, len(pieces))
        results = [
            speak_pieces(
                model, pieces, references, voice_options, vocoder=vocoder, seeds=seeds, text=args.text, on_piece=said
            )
        ]
    _write_results(args, model, texts, results, pieces)
    return 0


def _settle_inputs(args: argparse.Namespace) -> dict:
    """Upstream's spellings of the text and output, then ``--config`` under the flags, then the checkpoint and
    vocoder flags: ``args`` as the rest of ``infer`` reads it. Returns the config's extra voices."""
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
    resolve_checkpoint(args)
    if args.vocoder_name == "bigvgan" and args.load_vocoder_from_local:
        raise UserError(
            "BigVGAN vocoders are not supported: use --vocoder (the built-in vocoder, Griffin-Lim or a vocoder file) "
            "or a local Vocos (--vocoder-path)"
        )
    if args.load_vocoder_from_local and args.vocoder_path is None and args.vocoder in (None, "auto"):
        args.vocoder_path = UPSTREAM_VOCOS_DIR
    fill_defaults(args, {"output": "out.wav"})
    return voices


def _texts(args: argparse.Namespace, voices: dict) -> tuple[list | None, list[str]]:
    """The ``(voice, text)`` pieces of a text with ``[voice]`` tags (``None``: one voice) and the texts."""
    from flowtts.cli.voices import VOICE_TAG, split_voices

    if args.text is None and args.text_file is None:
        raise UserError("give --text or --text-file (or gen_text / gen_file in --config)")
    if args.text is not None and not args.text.strip():
        raise UserError("--text is empty")
    pieces = None
    if args.config and (voices or (args.text is not None and VOICE_TAG.search(args.text))):
        if args.text is None:
            raise UserError("the voices of --config go with one text (--text, gen_text or gen_file), not --text-file")
        pieces = split_voices(args.text, voices)
        if not pieces:
            raise UserError("the text has nothing to say besides its voice tags")
    return pieces, [args.text] if args.text is not None else read_lines(args.text_file)


def _check_outputs(args: argparse.Namespace, pieces) -> bool:
    """Where the results go, checked before any work; returns whether they stream to stdout (``-o -``)."""
    from flowtts.audio.io import check_audio_output, check_writable_directory
    from flowtts.utils.plotting import check_picture_output

    streaming = args.output == "-"
    if streaming:
        if args.text is None or pieces is not None:
            raise UserError("-o - streams one text in one voice (--text or --gen-file, no voice tags)")
        if args.remove_silence or args.save_mel:
            raise UserError("-o - cannot be combined with --remove-silence or --save-mel (they need the whole output)")
        return True
    if args.text_file is not None and os.path.isfile(args.output):
        raise UserError(f"with --text-file, -o must be a directory, and {args.output} is a file")
    if args.text is not None:
        check_audio_output(args.output, create_directory=getattr(args, "make_output_dir", False))
    else:
        check_writable_directory(args.output, create=True)
    if args.save_mel:
        check_picture_output(args.save_mel if args.text is not None else os.path.join(args.output, "001.png"))
    return False


def _load_voices(model, args: argparse.Namespace, voices: dict, options) -> tuple[dict, dict]:
    """Each voice's prepared reference and options (its own speed, times the model's rate factor)."""
    from flowtts.audio.transcribe import transcribe_reference
    from flowtts.synthesis import load_reference
    from flowtts.synthesis.options import model_speed

    def show(text):
        if not args.quiet:
            print(
                f"reference transcribed (pocketsphinx, English only; check it or pass --ref-text): {text!r}",
                file=sys.stderr,
            )

    references, voice_options = {}, {}
    for name, voice in voices.items():
        own_speed = None if voice.speed is None else voice.speed * model_speed(model)  # as recommended_options
        voice_options[name] = options if own_speed is None else dataclasses.replace(options, speed=own_speed)
        try:
            references[name] = load_reference(
                model, voice.ref_audio, voice.ref_text, voice_options[name], on_transcript=show,
                transcribe=transcribe_reference,
            )  # fmt: skip
        except ImportError:
            raise UserError(
                "--ref-text is required with --ref-audio (the transcript of the reference clip); "
                "or pip install 'flowtts[eval]' to transcribe English references offline"
            ) from None
    return references, voice_options


def _say_vocoder(args: argparse.Namespace, vocoder) -> None:
    """Upstream's ``--vocoder_name`` names a vocoder to download: say which one is used instead."""
    from flowtts.audio.vocoders import vocoder_name

    if args.vocoder_name is not None and args.vocoder_path is None and not args.quiet:
        print(
            f"--vocoder_name {args.vocoder_name}: flowtts downloads nothing, so the {vocoder_name(vocoder)} vocoder is "
            "used (--vocoder chooses; --vocoder-path DIR or --load_vocoder_from_local for a Vocos on disk)",
            file=sys.stderr,
        )


def _stream(model, reference, vocoder, options, args: argparse.Namespace) -> int:
    """Raw 16-bit PCM on stdout, each piece as soon as it is final."""
    import torch

    from flowtts.synthesis import stream
    from flowtts.synthesis.seeds import choose_seed

    args.seed = choose_seed(args.seed)
    if not args.quiet:
        rate = model.mel_spec.target_sample_rate
        print(f"streaming 16-bit mono PCM at {rate} Hz to stdout, seed {args.seed}", file=sys.stderr)
    out = sys.stdout.buffer
    for wave in stream(model, reference, args.text, vocoder=vocoder, options=options, seed=args.seed):
        out.write((wave.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().tobytes())
        out.flush()
    return 0


def _write_results(args: argparse.Namespace, model, texts: list[str], results, pieces) -> None:
    """One wav per text (``-o``, or ``-o``'s directory with ``--text-file``), with ``--save-mel``'s pictures."""
    from flowtts.audio.io import write_audio
    from flowtts.utils.plotting import save_mel_png

    rate = model.mel_spec.target_sample_rate
    if args.text is not None:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
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


def _parts(value: str) -> tuple[tuple[float, float], ...]:
    """argparse type of ``edit --parts``: :func:`flowtts.synthesis.edit.parse_parts`."""
    from flowtts.synthesis.edit import parse_parts

    try:
        return tuple(parse_parts(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated START-END seconds: {error}") from None


def _edit(args: argparse.Namespace) -> int:
    from flowtts.audio.io import check_audio_output, read_audio, write_audio
    from flowtts.synthesis.edit import edit_speech
    from flowtts.utils.plotting import check_picture_output, save_mel_png

    if not args.text.strip():
        raise UserError("--text is empty")
    check_sampling_flags(args)
    if args.durations is not None and len(args.durations) != len(args.parts):
        raise UserError(f"--durations gives {len(args.durations)} lengths for {len(args.parts)} --parts")
    check_audio_output(args.output)
    if args.save_mel:
        check_picture_output(args.save_mel)
    set_threads(args)
    model = load_model(args)
    say_clip_note(model, args, has_clip=True, editing=True)
    rate = model.mel_spec.target_sample_rate
    wave, _ = read_audio(args.audio, rate)
    options = sampling_options(model, args)
    result = edit_speech(
        model,
        wave,
        args.text,
        args.parts,
        durations=args.durations,
        vocoder=load_vocoder(model, args),
        options=options,
        seed=None if args.seed == -1 else args.seed,
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


def _serve(args: argparse.Namespace) -> int:
    from flowtts.audio.transcribe import transcribe_reference
    from flowtts.serving.socket_server import SpeechServer, check_settings
    from flowtts.synthesis import check_options, load_reference

    resolve_checkpoint(args)
    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.max_requests is not None and args.max_requests < 1:
        raise UserError(f"--max-requests must be >= 1, got {args.max_requests}")
    try:
        check_settings(
            max_clients=args.max_clients,
            idle_timeout=args.idle_timeout,
            request_timeout=args.request_timeout,
            send_timeout=args.send_timeout,
            name=lambda key: "--" + key.replace("_", "-"),
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    check_sampling_flags(args)
    set_threads(args)
    model = load_model(args)
    options = sampling_options(model, args)
    check_options(options)
    say_clip_note(model, args, has_clip=args.ref_audio is not None)
    try:
        reference = load_reference(model, args.ref_audio, args.ref_text, options, transcribe=transcribe_reference)
    except ImportError:
        raise UserError("--ref-text is required with --ref-audio (the transcript of the reference clip)") from None
    try:
        server = SpeechServer(
            model,
            reference,
            load_vocoder(model, args),
            options,
            host=args.host,
            port=args.port,
            seed=None if args.seed == -1 else args.seed,
            max_clients=args.max_clients,
            idle_timeout=args.idle_timeout,
            request_timeout=args.request_timeout,
            send_timeout=args.send_timeout,
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


INFER_FLAGS = ("steps", "cfg", "sway", "speed", "ref_silence", "fix_duration", "target_rms", "cross_fade", "seed")
MACHINE_FLAGS = ("device", "dtype", "threads", "vocoder", "vocoder_path")


def add_infer(sub) -> None:
    """Register ``infer`` (upstream F5-TTS's ``f5-tts_infer-cli`` spellings are accepted where they mean the same)."""
    infer = sub.add_parser("infer", help="synthesise speech from text and a reference clip")
    infer.add_argument(
        "-c",
        "--config",
        help="F5-TTS inference config (TOML: model, ckpt_file, ref_audio, ref_text, gen_text, gen_file, "
        "[voices.NAME] ...); options given here win over it",
    )
    _add_infer_inputs(infer)
    _add_infer_outputs(infer)
    add_sampling_flags(infer, INFER_FLAGS, seed="seed of the first utterance (the n-th uses seed + n - 1; -1: random)")
    add_continue_option(infer)
    infer.add_argument(
        "--remove-silence", "--remove_silence", action="store_true", help="shorten silences over 1 s in the output"
    )
    infer.add_argument(
        "--pipeline",
        choices=["f5tts", "flowtts"],
        help="f5tts: F5-TTS 1.1.22's reference preparation, chunks, durations and cut (default for F5-TTS "
        "checkpoints: their output is upstream's); flowtts: flowtts's own (default for flowtts's files)",
    )
    infer.add_argument("--batch-size", type=int, help="utterances per sample() call, default 4")
    add_sampling_flags(infer, MACHINE_FLAGS)
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
    infer.add_argument("-q", "--quiet", action="store_true")
    infer.set_defaults(func=_infer)


def _add_infer_inputs(infer: argparse.ArgumentParser) -> None:
    """``infer``'s model, reference and text."""
    infer.add_argument(
        "-m",
        "--model",
        help="flowtts or F5-TTS checkpoint, or 'builtin' (default); with --ckpt_file, its architecture (as upstream)",
    )
    infer.add_argument(
        "-p", "--ckpt_file", "--ckpt-file", dest="ckpt_file", help="the checkpoint (upstream's spelling)"
    )
    add_architecture_options(infer)
    add_quantize_option(infer)
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


def _add_infer_outputs(infer: argparse.ArgumentParser) -> None:
    """Where ``infer`` writes."""
    infer.add_argument(
        "-o",
        "--output",
        help="output wav, default out.wav (a directory with --text-file, or with --output-file as upstream's -o; "
        "'-': raw 16-bit PCM on stdout, streamed chunk by chunk)",
    )
    infer.add_argument("--output-dir", "--output_dir", help="upstream's spelling: -o is OUTPUT_DIR/OUTPUT_FILE")
    infer.add_argument("-w", "--output-file", "--output_file", help="upstream's spelling: -o is OUTPUT_DIR/OUTPUT_FILE")
    infer.add_argument("--save-mel", help="also write the spectrogram as a PNG (a directory's files with --text-file)")


def add_edit(sub) -> None:
    """Register ``edit``."""
    ed = sub.add_parser(
        "edit", help="make a recording say new words in chosen spans, keeping the rest (F5-TTS's speech editing)"
    )
    ed.add_argument("--audio", required=True, help="the recording to edit (any format soundfile reads)")
    ed.add_argument("--text", required=True, help="transcript of the whole recording after the edit")
    ed.add_argument(
        "--parts",
        required=True,
        type=_parts,
        help="spans to replace, START-END seconds, comma-separated (1.4-2.4,4-4.9)",
    )
    ed.add_argument(
        "--durations", type=numbers, help="new length in seconds of each part, comma-separated (default: their own)"
    )
    ed.add_argument("-o", "--output", default="edited.wav")
    ed.add_argument("--model", "--ckpt_file", default="builtin", help="flowtts or F5-TTS checkpoint, or 'builtin'")
    add_architecture_options(ed)
    add_quantize_option(ed)
    add_sampling_flags(ed, ("steps", "cfg", "sway", "target_rms", "seed", *MACHINE_FLAGS))
    ed.add_argument("--save-mel", help="also write the edited spectrogram as a PNG")
    ed.add_argument("-q", "--quiet", action="store_true")
    ed.set_defaults(func=_edit)


def add_serve(sub) -> None:
    """Register ``serve``."""
    sv = sub.add_parser("serve", help="a speech server on a TCP socket (F5-TTS's socket_server protocol)")
    sv.add_argument("-m", "--model", help="model file, builtin (default) or builtin:student")
    sv.add_argument("-p", "--ckpt_file", help="checkpoint (upstream's spelling; then --model names its architecture)")
    add_architecture_options(sv)
    add_quantize_option(sv)
    sv.add_argument("-r", "--ref-audio", "--ref_audio", help="reference clip (default: the built-in one)")
    sv.add_argument("-s", "--ref-text", "--ref_text", help="its transcript")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=9998, help="port (upstream's default; 0: any free one)")
    flags = ("steps", "cfg", "sway", "speed", "ref_silence", "target_rms", "cross_fade", "seed", *MACHINE_FLAGS)
    add_sampling_flags(sv, flags, seed="seed of every text's first chunk (default: random per text)")
    add_continue_option(sv)
    sv.add_argument("--max-requests", type=int, help="stop after this many texts (default: serve until Ctrl-C)")
    sv.add_argument(
        "--max-clients",
        type=int,
        default=4,
        help="connections served at once (default 4); a client waiting silently gives its place to a new one, "
        "and a new one finding every place busy is answered 'ERROR: busy'",
    )
    sv.add_argument(
        "--idle-timeout", type=float, default=60.0, help="seconds a silent client stays connected (default 60)"
    )
    sv.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        help="seconds a text may take to arrive, from its first byte to its last (default 10)",
    )
    sv.add_argument(
        "--send-timeout",
        type=float,
        default=30.0,
        help="seconds each chunk of an answer may take to send; a client that does not read is then disconnected "
        "(default 30)",
    )
    sv.set_defaults(func=_serve)
