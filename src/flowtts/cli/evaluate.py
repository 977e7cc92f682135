"""``flowtts eval``: word error rate, speaker similarity and DNSMOS on held-out sentences."""

from __future__ import annotations

import argparse
import os
import sys

from flowtts.cli.common import (
    UserError,
    add_continue_option,
    add_quantize_option,
    add_sampling_flags,
    check_sampling_flags,
    fill_defaults,
    load_vocoder,
    sampling_options,
    say_clip_note,
    set_threads,
)


def _evaluate(args: argparse.Namespace) -> int:
    """``flowtts eval``: score each model (and the recordings) on the held-out rows, print and write the table."""
    from flowtts.audio.transcribe import PocketSphinx
    from flowtts.eval.report import format_scores

    fill_defaults(args, {"seed": 0})
    texts, audio, prompts = _heldout(args)
    set_threads(args)
    _limit_dnsmos_threads()
    asr = PocketSphinx()
    recognizer = _judge(args.recognizer)
    scores, first = [], None
    for spec in args.model:
        score, used = _score_model(spec, args, texts, prompts, asr, recognizer, len(scores))
        scores.append(score)
        first = first or used
    if not args.no_recordings:
        scores.append(_score_recordings(audio, texts, first, asr, recognizer))
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
                if score.ctc_transcripts:
                    print(f"     {score.ctc_transcripts[i]!r}  <- {score.label}, CTC recogniser")
    if args.out:
        _write_csv(args.out, scores, texts)
    return 0


def _heldout(args: argparse.Namespace) -> tuple[list[str], list[str], list[tuple]]:
    """The held-out texts, their recordings and each one's prompt ``(clip, transcript)``, checked."""
    from flowtts.checkpoints.loader import builtin_reference
    from flowtts.train.data import read_metadata

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    check_sampling_flags(args)
    if args.cross_sentence and (args.ref_audio or args.ref_text):
        raise UserError("--cross-sentence takes each prompt from the held-out set: drop --ref-audio/--ref-text")
    if bool(args.ref_audio) != bool(args.ref_text):
        raise UserError("--ref-audio and --ref-text go together (the clip and its transcript)")
    rows = [row for row in read_metadata(args.heldout, args.layout) if row[2]][: args.n]
    if not rows:
        raise UserError(f"{args.heldout} has no rows with an audio file and a transcript")
    if args.cross_sentence and len(rows) < 2:
        raise UserError(f"{args.heldout} has 1 usable row; --cross-sentence needs at least 2")
    root = os.path.dirname(os.path.abspath(args.heldout))
    texts = [text for _, _, text in rows]
    audio = [os.path.join(root, path) for _, path, _ in rows]
    if args.cross_sentence or not args.no_recordings:  # read once every model has run: checked before any
        for path in audio:
            _check_recording(path, args.heldout)
    if args.cross_sentence:  # sentence i is said in the voice of recording i+1, which prompts with its transcript
        prompts = [(audio[(i + 1) % len(rows)], texts[(i + 1) % len(rows)]) for i in range(len(rows))]
    else:
        clip = (args.ref_audio, args.ref_text) if args.ref_audio else builtin_reference()
        prompts = [clip] * len(rows)
    return texts, audio, prompts


MIN_RECORDING_SECONDS = 0.05  # a mel front end's first frame needs n_fft / 2 samples on either side (~21 ms)


def _check_recording(path: str, heldout: str) -> None:
    """Refuse a held-out recording that is missing, unreadable or too short to score, naming it."""
    import soundfile as sf

    try:
        seconds = sf.info(path).duration
    except (OSError, RuntimeError) as error:  # soundfile.LibsndfileError is a RuntimeError
        raise UserError(f"--heldout {heldout}: cannot read the recording {path} ({error})") from None
    if seconds < MIN_RECORDING_SECONDS:
        raise UserError(
            f"--heldout {heldout}: the recording {path} lasts {seconds:.3f} s, under the "
            f"{MIN_RECORDING_SECONDS} s a recording needs to be scored"
        )


def _score_model(spec: str, args: argparse.Namespace, texts, prompts, asr, recognizer, index: int):
    """One model's scores, and ``(model, references, similarity)`` for scoring the recordings."""
    from flowtts.audio.io import read_audio
    from flowtts.checkpoints.loader import load
    from flowtts.eval.report import score_model, speaker_similarity_or_none
    from flowtts.synthesis import prepare_reference

    model = load(spec, preset=args.preset, vocab=args.vocab, device=args.device or "cpu", quantize=args.quantize)
    say_clip_note(model, args, has_clip=bool(args.ref_audio or args.cross_sentence), name=spec)
    rate = model.mel_spec.target_sample_rate
    options = sampling_options(model, args)
    cache = {}
    for clip in dict.fromkeys(prompts):
        cache[clip] = prepare_reference(model, read_audio(clip[0], rate)[0], clip[1], options)
    references = [cache[clip] for clip in prompts]
    similarity = speaker_similarity_or_none(model.mel_spec)
    if recognizer is not None:
        from flowtts.model.mel import mel_config_of

        recognizer.check_fits(mel_config_of(model), spec)
    speed = f", speed {options.speed:g}" if options.speed != 1 else ""
    unprompted = "" if options.continue_reference else ", unprompted"
    label = f"{spec} ({options.steps} steps, cfg {options.cfg_strength:g}{speed}{unprompted})"
    score = score_model(
        model,
        texts,
        references,
        asr=asr,
        options=options,
        vocoder=load_vocoder(model, args),
        similarity=similarity,
        seeds=[args.seed + i for i in range(len(texts))],
        label=label,
        progress=not args.quiet,
        on_utterance=_saver(args, index),
        recognizer=recognizer,
        dnsmos=True,
    )
    return score, (model, references, similarity)


def _saver(args: argparse.Namespace, index: int):
    """With ``--out`` and ``--save-audio``: what keeps system ``index``'s utterances as wavs."""
    if not (args.out and args.save_audio):
        return None
    from flowtts.audio.io import write_audio

    folder = os.path.join(args.out, f"system{index}")
    os.makedirs(folder, exist_ok=True)

    def save(i, utterance):
        write_audio(os.path.join(folder, f"{i:04d}.wav"), utterance.wave, utterance.sample_rate)

    return save


def _score_recordings(audio: list[str], texts, first, asr, recognizer):
    """The held-out recordings' own scores, against the first model's references."""
    from flowtts.audio.io import read_audio
    from flowtts.eval.report import score_recordings

    model, references, similarity = first
    rate = model.mel_spec.target_sample_rate
    return score_recordings(
        [read_audio(path, rate)[0] for path in audio],
        texts,
        references,
        sample_rate=rate,
        mel_spec=model.mel_spec,
        asr=asr,
        similarity=similarity,
        recognizer=recognizer,
        dnsmos=True,
    )


def _limit_dnsmos_threads() -> None:
    """DNSMOS's ONNX models on torch's thread count (``--threads``) rather than onnxruntime's every core."""
    import torch

    from flowtts.eval.dnsmos import dnsmos_available, limit_threads

    if dnsmos_available():
        limit_threads(torch.get_num_threads())


def _write_csv(out: str, scores, texts: list[str]) -> None:
    """``eval.csv`` (a row per system) and ``transcripts.csv`` (a row per system and sentence) in ``out``."""
    import csv

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "eval.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(scores[0].row()))
        writer.writeheader()
        writer.writerows(s.row() for s in scores)
    with open(os.path.join(out, "transcripts.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["system", "index", "text", "heard", "sim", "heard_ctc", "dnsmos"])
        for score in scores:
            for i, text in enumerate(texts):
                sim = f"{score.sims[i]:.4f}" if score.sims else ""
                ctc = score.ctc_transcripts[i] if score.ctc_transcripts else ""
                mos = score.dnsmos_scores[i] if score.dnsmos_scores else None
                mos = "" if mos is None else f"{mos:.3f}"
                writer.writerow([score.label, i, text, score.transcripts[i], sim, ctc, mos])


def _judge(spec: str):
    """The CTC recogniser of the ``CTC WER`` column: ``spec`` (``"none"``: left out)."""
    if spec == "none":
        return None
    from flowtts.eval.recognizer import load_recognizer

    return load_recognizer(spec)


def add_eval(sub) -> None:
    """Register ``eval``."""
    ev = sub.add_parser(
        "eval",
        help="word error rate, speaker similarity and DNSMOS of models on held-out sentences (F5-TTS's eval)",
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
    add_sampling_flags(ev, ("steps", "cfg", "sway", "speed", "ref_silence", "target_rms"))
    add_continue_option(ev)
    add_quantize_option(ev)
    add_sampling_flags(
        ev, ("run_seed", "dtype", "vocoder", "vocoder_path"), run_seed="sentence i uses seed + i (default 0)"
    )
    ev.add_argument(
        "--recognizer",
        default="builtin",
        help="CTC recogniser that also reads each mel (the CTC WER column; default: the built-in voice's; "
        "'none': left out). A model trained against it is judged by pocketsphinx's WER, not by this column",
    )
    ev.add_argument("--no-recordings", action="store_true", help="do not score the held-out recordings themselves")
    ev.add_argument("--out", help="write eval.csv and transcripts.csv here")
    ev.add_argument("--save-audio", action="store_true", help="with --out: keep every synthesis as a wav")
    ev.add_argument("--show", action="store_true", help="print what the recogniser heard")
    add_sampling_flags(ev, ("device", "threads"))
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=_evaluate)
