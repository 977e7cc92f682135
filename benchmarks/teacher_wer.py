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

import torch

import flowtts
from _common import table
from flowtts.audio.io import read_audio
from flowtts.audio.transcribe import PocketSphinx
from flowtts.audio.vocoders import GriffinLim
from flowtts.eval.report import score_model, score_recordings
from flowtts.synthesis import prepare_reference, recommended_options
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
    clip = read_audio(ref_audio, 24_000)[0]
    for spec in args.model:
        model = flowtts.load(spec)
        vocoder = GriffinLim(model.mel_spec)
        first_mels = None
        for dtype in args.dtypes:
            options = recommended_options(model, steps=args.steps, cfg_strength=args.cfg, dtype=dtype)
            reference = prepare_reference(model, clip, ref_text, options)
            mels = {}
            score = score_model(
                model,
                texts,
                [reference] * len(texts),
                asr=asr,
                options=options,
                vocoder=vocoder,
                label=f"{spec} @{options.steps} steps, cfg {options.cfg_strength:g}, {dtype}",
                progress=True,
                on_utterance=lambda i, u, mels=mels: mels.__setitem__(i, u.mel),
            )
            transcripts[score.label] = score.transcripts
            row = {k: v for k, v in score.row().items() if k in ("system", "utterances", "WER", "synthesis s")}
            mels = [mels[i] for i in range(len(texts))]
            if first_mels is None:
                first_mels = mels
            else:
                diffs = [(a.float() - b.float()).abs().mean() for a, b in zip(first_mels, mels) if a.shape == b.shape]
                row[f"mean |mel - {args.dtypes[0]} mel|"] = f"{float(torch.stack(diffs).mean()):.4f}"
            table_rows.append(row)
    rate = 24_000
    waves = [read_audio(os.path.join(root, audio), rate)[0] for _, audio, _ in rows]
    mel_spec = model.mel_spec
    griffin = GriffinLim(mel_spec)
    with torch.no_grad():
        resynth = [griffin(mel_spec(w[None]))[0] for w in waves]
    for label, audio in (("corpus recordings", waves), ("corpus mels -> Griffin-Lim", resynth)):
        score = score_recordings(audio, texts, [None] * len(texts), sample_rate=rate, mel_spec=mel_spec, asr=asr)
        transcripts[label] = score.transcripts
        table_rows.append({"system": label, "utterances": str(len(texts)), "WER": f"{score.wer:.3f}"})
    if args.show:
        for i, text in enumerate(texts):
            print(f"REF   {text}")
            for label, heard in transcripts.items():
                print(f"  {heard[i]!r:<60} <- {label}")
    columns = list(dict.fromkeys(c for r in table_rows for c in r))
    print(table(table_rows, columns))


if __name__ == "__main__":
    main()
