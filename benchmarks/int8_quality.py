"""How far int8 samples are from float32 ones: mean |log-mel difference| on held-out sentences.

Usage: python benchmarks/int8_quality.py --heldout corpus/metadata_heldout.csv [--n 20]
       [--models builtin builtin:student]

Each sentence is said after the built-in reference clip with seed ``i`` by the float32 model and by its int8
copy (:func:`flowtts.quantize`), each at its recommended sampling settings (the teacher's 32 guided steps, a
student's own recipe); the table gives the mean absolute difference of the generated log-mel frames, next
to the mean absolute log-mel level for scale, and the time of each. Word error rate and speaker similarity
come from ``flowtts eval`` with and without ``--quantize int8`` on the same sentences.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import table


def main() -> None:
    import flowtts
    from flowtts.audio.io import read_audio
    from flowtts.checkpoints.loader import builtin_reference
    from flowtts.synthesis import prepare_reference, recommended_options
    from flowtts.train.data import read_metadata

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", required=True, help="metadata of held-out sentences (audio_file|text)")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["builtin", "builtin:student"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = [text for _, _, text in read_metadata(args.heldout) if text][: args.n]
    clip, clip_text = builtin_reference()
    rows = []
    for spec in args.models:
        plain = flowtts.load(spec)
        int8 = flowtts.quantize(plain)
        options = recommended_options(plain)
        reference = prepare_reference(plain, read_audio(clip, 24_000)[0], clip_text, options)
        differences, levels, seconds = [], [], {"fp32": 0.0, "int8": 0.0}
        for i, text in enumerate(texts):
            outs = {}
            for label, model in (("fp32", plain), ("int8", int8)):
                start = time.perf_counter()
                outs[label] = _sample(model, reference, text, options, seed=i)
                seconds[label] += time.perf_counter() - start
            a, b = outs["fp32"], outs["int8"]
            differences.append(float((a - b).abs().mean()))
            levels.append(float(a.abs().mean()))
        rows.append(
            {
                "model": spec,
                "sentences": len(texts),
                "mean |mel diff|": f"{statistics.mean(differences):.4f}",
                "max per sentence": f"{max(differences):.4f}",
                "mean |mel|": f"{statistics.mean(levels):.3f}",
                "fp32 s": f"{seconds['fp32']:.1f}",
                "int8 s": f"{seconds['int8']:.1f}",
                "fp32/int8": f"{seconds['fp32'] / seconds['int8']:.2f}x",
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\nint8 vs float32, same seeds, generated log-mel frames")
    print(table(rows, list(rows[0])))


def _sample(model, reference, text, options, seed: int) -> torch.Tensor:
    """The generated log-mel ``(d, n)`` of ``text`` (the vocoder is skipped: only the mel is compared)."""
    from flowtts.synthesis import synthesize

    def no_vocoder(mel):
        return torch.zeros(mel.shape[0], 1)

    return synthesize(model, reference, [text], vocoder=no_vocoder, options=options, seeds=[seed], progress=False)[
        0
    ].mel


if __name__ == "__main__":
    main()
