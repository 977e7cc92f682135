"""Real-time factor of the ``flowtts infer`` pipeline (random weights) on this machine.

Usage: python benchmarks/infer_rtf.py [--presets tiny F5TTS_v1_Small] [--steps 32 8] [--repeats 3]

Runs the same code as the CLI (reference preparation, duration estimate, ``sample()``, Griffin-Lim)
with the espeak-ng reference clip in ``tests/assets`` and prints, per preset and step count, the
median seconds of synthesis, the seconds of audio produced and their ratio (RTF < 1 is faster than
real time). Model loading is excluded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from _common import randomise_, table
from flowtts.audio.io import read_audio
from flowtts.audio.vocoders import GriffinLim
from flowtts.model.build import build_model
from flowtts.synthesis import InferenceOptions, prepare_reference, synthesize

ASSET = os.path.join(os.path.dirname(__file__), "..", "tests", "assets", "birch_canoe_espeak_22k.wav")
REF_TEXT = "The birch canoe slid on the smooth planks."
TEXT = "Glue the sheet to the dark blue background, then hold it there until it dries completely."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "F5TTS_v1_Small"])
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for preset in args.presets:
        model = build_model(preset).eval()
        randomise_(model)
        wave, _ = read_audio(ASSET, model.mel_spec.target_sample_rate)
        vocoder = GriffinLim(model.mel_spec)
        for steps in args.steps:
            options = InferenceOptions(steps=steps)
            reference = prepare_reference(model, wave, REF_TEXT, options)
            times, audio_seconds = [], 0.0
            for i in range(args.repeats + 1):
                start = time.perf_counter()
                (result,) = synthesize(
                    model, reference, [TEXT], vocoder=vocoder, options=options, seeds=[i], progress=False
                )
                if i:  # the first run is a warm-up
                    times.append(time.perf_counter() - start)
                audio_seconds = result.wave.numel() / result.sample_rate
            seconds = statistics.median(times)
            row = {
                "preset": preset,
                "params(M)": f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}",
                "steps": steps,
                "synthesis (s)": f"{seconds:.2f}",
                "audio (s)": f"{audio_seconds:.2f}",
                "RTF": f"{seconds / audio_seconds:.3f}",
            }
            rows.append(row)
            print(table([row], list(row)), flush=True)
    print(f"\nflowtts infer pipeline, cfg 2, sway -1, Griffin-Lim, {args.threads} threads, median of {args.repeats}")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
