"""Listen-by-proxy: word error rate of a model's held-out syntheses vs the corpus audio itself.

Usage: python benchmarks/teacher_wer.py --model builtin --heldout corpus/metadata_heldout.csv [--n 20]

Each held-out sentence is synthesised in the voice of the reference clip (the built-in one unless
``--ref-audio``/``--ref-text``), rendered with Griffin-Lim, and transcribed by pocketsphinx's generic
English model (offline). The same recogniser transcribes the corpus recordings of those sentences.
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
from flowtts.infer import InferenceOptions, prepare_reference, synthesize
from flowtts.train.data import read_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--heldout", required=True, help="metadata csv of held-out audio_file|text rows")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--ref-audio")
    parser.add_argument("--ref-text")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", action="store_true", help="print every transcript")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = flowtts.load(args.model)
    rate = model.mel_spec.target_sample_rate
    if args.ref_audio:
        ref_audio, ref_text = args.ref_audio, args.ref_text
    else:
        from flowtts.checkpoints.loader import builtin_reference

        ref_audio, ref_text = builtin_reference()
    rows = read_metadata(args.heldout)[: args.n]
    root = os.path.dirname(os.path.abspath(args.heldout))
    texts = [text for _, _, text in rows]
    options = InferenceOptions(steps=args.steps, cfg_strength=args.cfg)
    reference = prepare_reference(model, read_audio(ref_audio, rate)[0], ref_text, options)
    start = time.perf_counter()
    results = synthesize(
        model,
        reference,
        texts,
        vocoder=GriffinLim(model.mel_spec),
        options=options,
        seeds=list(range(len(texts))),
        progress=True,
    )
    seconds = time.perf_counter() - start
    asr = PocketSphinx()
    synthesized = [asr(r.wave, rate) for r in results]
    corpus = [asr(read_audio(os.path.join(root, audio), rate)[0], rate) for _, audio, _ in rows]
    if args.show:
        for text, a, b in zip(texts, synthesized, corpus):
            print(f"REF  {text}\nSYN  {a}\nCORP {b}\n")
    table_rows = [
        {
            "audio": f"{args.model} @{args.steps} steps, cfg {args.cfg}",
            "utterances": len(texts),
            "WER": f"{word_error_rate(texts, synthesized):.3f}",
        },
        {"audio": "corpus recordings", "utterances": len(texts), "WER": f"{word_error_rate(texts, corpus):.3f}"},
    ]
    print(table(table_rows, ["audio", "utterances", "WER"]))
    print(f"synthesis of {len(texts)} utterances: {seconds:.1f} s")


if __name__ == "__main__":
    main()
