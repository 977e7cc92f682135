"""Listen-by-proxy: word error rate of a model's held-out syntheses vs the corpus audio itself.

Usage: python benchmarks/teacher_wer.py --model builtin [builtin:student ...] \
           --heldout corpus/metadata_heldout.csv [--n 20] [--dtypes float32 bfloat16]

Each held-out sentence is synthesised in the voice of the reference clip (the built-in one unless
``--ref-audio``/``--ref-text``), rendered with Griffin-Lim, and transcribed by pocketsphinx's generic
English model (offline). Each model is sampled with its own settings (a distilled student with the
steps/guidance/grid it was trained for) unless ``--steps``/``--cfg`` say otherwise, once per
``--dtypes`` entry (with the mean absolute mel difference from the first dtype, same seeds). The same
recogniser transcribes the corpus recordings of those sentences, and their mels rendered with
Griffin-Lim (the vocoder's own share of the error).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import flowtts
from _common import table
from flowtts.audio.io import read_audio
from flowtts.audio.vocoders import GriffinLim
from flowtts.eval import word_error_rate
from flowtts.eval.asr import PocketSphinx
from flowtts.infer import prepare_reference, recommended_options, synthesize
from flowtts.train.data import read_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", nargs="+", default=["builtin"], help="one or more models (e.g. builtin builtin:student)"
    )
    parser.add_argument("--heldout", required=True, help="metadata csv of held-out audio_file|text rows")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, help="default: 32, or what a distilled student was trained for")
    parser.add_argument("--cfg", type=float, help="default: 2, or what a distilled student was trained for")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--ref-audio")
    parser.add_argument("--ref-text")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", action="store_true", help="print every transcript")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.ref_audio:
        ref_audio, ref_text = args.ref_audio, args.ref_text
    else:
        from flowtts.checkpoints.loader import builtin_reference

        ref_audio, ref_text = builtin_reference()
    rows = read_metadata(args.heldout)[: args.n]
    root = os.path.dirname(os.path.abspath(args.heldout))
    texts = [text for _, _, text in rows]
    asr = PocketSphinx()
    table_rows, transcripts = [], {}
    for spec in args.model:
        model = flowtts.load(spec)
        rate = model.mel_spec.target_sample_rate
        vocoder = GriffinLim(model.mel_spec)
        first_mels = None
        for dtype in args.dtypes:
            options = recommended_options(model, steps=args.steps, cfg_strength=args.cfg, dtype=dtype)
            reference = prepare_reference(model, read_audio(ref_audio, rate)[0], ref_text, options)
            start = time.perf_counter()
            results = synthesize(
                model, reference, texts, vocoder=vocoder, options=options, seeds=list(range(len(texts))), progress=True
            )
            seconds = time.perf_counter() - start
            heard = [asr(r.wave, rate) for r in results]
            label = f"{spec} @{options.steps} steps, cfg {options.cfg_strength:g}, {dtype}"
            transcripts[label] = heard
            row = {
                "audio": label,
                "utterances": len(texts),
                "WER": f"{word_error_rate(texts, heard):.3f}",
                "synthesis s": f"{seconds:.1f}",
            }
            mels = [r.mel for r in results]
            if first_mels is None:
                first_mels = mels
            else:
                diffs = [(a.float() - b.float()).abs().mean() for a, b in zip(first_mels, mels) if a.shape == b.shape]
                row[f"mean |mel - {args.dtypes[0]} mel|"] = f"{float(torch.stack(diffs).mean()):.4f}"
            table_rows.append(row)
    rate = 24_000
    waves = [read_audio(os.path.join(root, audio), rate)[0] for _, audio, _ in rows]
    corpus = [asr(w, rate) for w in waves]
    mel_spec = model.mel_spec
    griffin = GriffinLim(mel_spec)
    with torch.no_grad():
        resynth = [asr(griffin(mel_spec(w[None]))[0], rate) for w in waves]
    transcripts["corpus recordings"] = corpus
    table_rows.append(
        {"audio": "corpus recordings", "utterances": len(texts), "WER": f"{word_error_rate(texts, corpus):.3f}"}
    )
    table_rows.append(
        {
            "audio": "corpus mels -> Griffin-Lim",
            "utterances": len(texts),
            "WER": f"{word_error_rate(texts, resynth):.3f}",
        }
    )
    if args.show:
        for i, text in enumerate(texts):
            print(f"REF   {text}")
            for label, heard in transcripts.items():
                print(f"  {heard[i]!r:<60} <- {label}")
    columns = list(dict.fromkeys(c for r in table_rows for c in r))
    print(table(table_rows, columns))


if __name__ == "__main__":
    main()
