"""Vocoders side by side on held-out recordings and on generated speech (issue #34).

Usage: python benchmarks/vocoder.py --recordings REPORT/metadata.csv [--n 48] [--vocoder FILE]
           [--vocos DIR] [--models builtin builtin:student] [--threads 2] [--out DIR]

Recordings: each recording's log-mel (the built-in models' front end) goes through every vocoder and the
wave that comes back is scored against the sentence; the recordings themselves are the first row.
Generated speech: each ``--models`` entry speaks every sentence once (sentence ``i`` from seed
``seed + i``, the model's own recipe, unprompted as the built-in models speak), and the same mel goes
through every vocoder.

Vocoders: Griffin-Lim (flowtts.audio.vocoders.GriffinLim, 48 fast iterations after the filterbank
inversion), the built-in neural vocoder (or ``--vocoder FILE``), and Vocos when ``--vocos DIR`` is given
and the ``vocos`` package is installed.

Columns: DNSMOS P.808 and OVRL (speechmos's bundled ONNX models, wave at 16 kHz scaled to peak 0.9);
pocketsphinx WER with its standard error over sentences; MR-STFT (the multi-resolution STFT distance to
the recording: spectral convergence + log-magnitude L1 at FFT 512/1024/2048, recordings only); s/s (the
vocoder's wall time per second of audio: the median over sentences, each timed as the best of
``--repeats`` calls on ``--threads`` threads); and the speed ratio to Griffin-Lim measured in the same run.
Last, end to end: ``synthesize()`` of ``--end-to-end`` (network and vocoder, as ``flowtts infer`` runs it)
per second of audio with each vocoder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

import flowtts
from _common import table
from flowtts.audio.io import read_audio
from flowtts.audio.transcribe import PocketSphinx
from flowtts.audio.vocoders import GriffinLim
from flowtts.eval.dnsmos import dnsmos, dnsmos_available, limit_threads
from flowtts.eval.wer import edit_distance, normalize_words
from flowtts.model.mel import MelSpec, mel_config_of
from flowtts.train.data import read_metadata
from flowtts.train.vocoder.losses import multi_resolution_stft_loss
from flowtts.vocoder.files import check_fits, load_vocoder_file

RATE = 24_000
COLUMNS = ["source", "vocoder", "DNSMOS", "OVRL", "WER", "+-", "MR-STFT", "s/s", "x GL"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recordings", required=True, help="metadata.csv of held-out recordings (audio_file|text)")
    p.add_argument("--n", type=int, default=48, help="sentences (the first N rows)")
    p.add_argument("--vocoder", default="builtin", help="flowtts vocoder file (default: the built-in one)")
    p.add_argument("--vocos", help="a local Vocos directory (config.yaml + weights), when vocos is installed")
    p.add_argument("--models", nargs="*", default=["builtin", "builtin:student"], help="models for generated speech")
    p.add_argument("--seed", type=int, default=0, help="sentence i is generated from seed + i")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per sentence (the best is kept)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--end-to-end", default="builtin:student", help="model timed end to end with each vocoder")
    p.add_argument("--end-to-end-n", type=int, default=16, help="sentences of the end-to-end timing (0: none)")
    p.add_argument("--out", help="folder for vocoder.txt and vocoder.json")
    args = p.parse_args(argv)
    if args.end_to_end_n < 0:
        raise ValueError(f"--end-to-end-n must be >= 0, got {args.end_to_end_n}")
    for name in ("n", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not os.path.isfile(args.recordings):
        raise ValueError(f"--recordings {args.recordings}: no such file")
    return args


def vocoders(args, mel_spec) -> dict:
    """Name -> vocoder (each maps a log-mel ``(1, d, n)`` to a wave ``(1, nw)``)."""
    neural = load_vocoder_file(args.vocoder)
    check_fits(neural, mel_config_of(flowtts.load("builtin")), "the built-in models")
    out = {"griffin-lim": GriffinLim(mel_spec), "built-in": neural}
    if args.vocos:
        from flowtts.audio.vocoders import VocosVocoder

        out["vocos"] = VocosVocoder(args.vocos)
    return out


def timed(vocoder, mel: torch.Tensor, repeats: int) -> tuple[torch.Tensor, float]:
    """The wave of ``mel`` ``(d, n)`` and the best wall time of ``repeats`` calls."""
    best = math.inf
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            wave = vocoder(mel[None].float())[0]
            best = min(best, time.perf_counter() - start)
    return wave.float(), best


def wer_with_error(texts, transcripts) -> tuple[float, float]:
    """Corpus WER and its standard error over sentences (ratio estimator)."""
    errors = [
        (edit_distance(normalize_words(t), normalize_words(h)), len(normalize_words(t)))
        for t, h in zip(texts, transcripts)
    ]
    e, w = sum(x for x, _ in errors), sum(y for _, y in errors)
    wer = e / w
    n = len(errors)
    if n < 2:
        return wer, float("nan")
    mean_w = w / n
    resid = [(x - wer * y) / mean_w for x, y in errors]
    return wer, statistics.stdev(resid) / math.sqrt(n)


def score(source: str, name: str, texts, waves, asr, seconds_per_second=None, references=None) -> dict:
    """One row: DNSMOS, WER, MR-STFT distance (with ``references``), speed."""
    row = {"source": source, "vocoder": name}
    if dnsmos_available():
        scores = [dnsmos(w, RATE) for w in waves]
        row["DNSMOS"] = statistics.mean(s.p808 for s in scores)
        row["OVRL"] = statistics.mean(s.ovrl for s in scores)
    wer, se = wer_with_error(texts, [asr(w, RATE) for w in waves])
    row["WER"], row["+-"] = wer, se
    if references is not None:
        distances = []
        for w, r in zip(waves, references):
            k = min(w.numel(), r.numel())
            distances.append(float(multi_resolution_stft_loss(w[None, :k].double(), r[None, :k].double())))
        row["MR-STFT"] = statistics.mean(distances)
    if seconds_per_second is not None:
        row["s/s"] = statistics.median(seconds_per_second)
    return row


def run_source(source, texts, mels, all_vocoders, asr, repeats, references=None) -> list[dict]:
    rows = []
    for name, vocoder in all_vocoders.items():
        waves, speed = [], []
        for mel in mels:
            wave, seconds = timed(vocoder, mel, repeats)
            waves.append(wave)
            speed.append(seconds / (wave.numel() / RATE))
        rows.append(score(source, name, texts, waves, asr, speed, references))
        print(f"  {source} / {name} done", file=sys.stderr, flush=True)
    gl = next(r for r in rows if r["vocoder"] == "griffin-lim")
    for r in rows:
        r["x GL"] = gl["s/s"] / r["s/s"]
    return rows


def generated_mels(spec: str, texts, seed: int) -> list[torch.Tensor]:
    """The mels ``(d, n)`` a model speaks for ``texts`` (sentence ``i`` from ``seed + i``)."""
    from flowtts.checkpoints.loader import builtin_reference
    from flowtts.synthesis import prepare_reference, recommended_options, synthesize

    model = flowtts.load(spec)
    options = recommended_options(model)
    ref_audio, ref_text = builtin_reference()
    reference = prepare_reference(model, read_audio(ref_audio, RATE)[0], ref_text, options)
    mels = []
    with torch.inference_mode():
        for i, text in enumerate(texts):
            (utt,) = synthesize(
                model,
                reference,
                [text],
                vocoder=GriffinLim(model.mel_spec),
                options=options,
                seeds=[seed + i],
                progress=False,
            )
            mels.append(utt.mel.float())
    return mels


def end_to_end(spec: str, texts, vocoders_by_name: dict, seed: int) -> list[dict]:
    """Seconds of ``synthesize()`` (network and vocoder) per second of audio for each vocoder: the median over
    ``texts``, the vocoders taking turns sentence by sentence so a drift in machine speed hits all alike."""
    from flowtts.checkpoints.loader import builtin_reference
    from flowtts.synthesis import prepare_reference, recommended_options, synthesize

    model = flowtts.load(spec)
    options = recommended_options(model)
    ref_audio, ref_text = builtin_reference()
    reference = prepare_reference(model, read_audio(ref_audio, RATE)[0], ref_text, options)
    times = {name: [] for name in vocoders_by_name}
    with torch.inference_mode():
        for i, text in enumerate(texts):
            for name, vocoder in vocoders_by_name.items():
                start = time.perf_counter()
                (utt,) = synthesize(
                    model, reference, [text], vocoder=vocoder, options=options, seeds=[seed + i], progress=False
                )
                times[name].append((time.perf_counter() - start) / (utt.wave.numel() / RATE))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    gl = medians["griffin-lim"]
    return [{"model": spec, "vocoder": n, "s per s of audio": m, "x GL": gl / m} for n, m in medians.items()]


def fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}" if value < 100 else f"{value:.0f}"
    return str(value)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if dnsmos_available():
        limit_threads(args.threads)
    rows_meta = read_metadata(args.recordings)[: args.n]
    root = os.path.dirname(os.path.abspath(args.recordings))
    texts = [t for _, _, t in rows_meta]
    recordings = [read_audio(os.path.join(root, a), RATE)[0] for _, a, _ in rows_meta]
    mel_spec = MelSpec()
    all_vocoders = vocoders(args, mel_spec)
    asr = PocketSphinx()
    start = time.perf_counter()
    recording_row = score("recordings", "(none)", texts, recordings, asr)
    with torch.inference_mode():
        mels = [mel_spec(w[None])[0] for w in recordings]
    rows = [recording_row] + run_source("recordings", texts, mels, all_vocoders, asr, args.repeats, recordings)
    for spec in args.models:
        print(f"[{time.perf_counter() - start:.0f} s] generating with {spec}", file=sys.stderr, flush=True)
        rows += run_source(spec, texts, generated_mels(spec, texts, args.seed), all_vocoders, asr, args.repeats)
    speed_rows = []
    if args.end_to_end_n:
        print(f"[{time.perf_counter() - start:.0f} s] end to end with {args.end_to_end}", file=sys.stderr, flush=True)
        speed_rows = end_to_end(args.end_to_end, texts[: args.end_to_end_n], all_vocoders, args.seed)
    header = (
        f"{len(texts)} sentences of {args.recordings}; threads {args.threads}; "
        f"DNSMOS {'speechmos' if dnsmos_available() else 'n/a (pip install speechmos onnxruntime)'}; "
        f"built-in vocoder {args.vocoder}; {time.perf_counter() - start:.0f} s"
    )
    text = header + "\n\n" + table([{c: fmt(r.get(c, "")) for c in COLUMNS} for r in rows], COLUMNS)
    if speed_rows:
        columns = ["model", "vocoder", "s per s of audio", "x GL"]
        text += f"\n\nend to end (synthesize(), {len(texts[: args.end_to_end_n])} sentences, median):\n"
        text += table([{c: fmt(r[c]) for c in columns} for r in speed_rows], columns)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "vocoder.txt"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        with open(os.path.join(args.out, "vocoder.json"), "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "rows": rows, "end_to_end": speed_rows}, f, indent=1)


if __name__ == "__main__":
    main()
