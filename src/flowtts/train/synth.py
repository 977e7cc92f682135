"""An offline speech corpus: sentences written by a small grammar here, spoken by local TTS engines.

Voices: ``hibari`` (the ``hibari-tts`` package, natural 24 kHz voice, model inside the wheel) and,
when the ``espeak-ng`` program is installed, ``espeak:<voice>`` speakers. Nothing is downloaded.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_SUBJECTS = [
    "the old man",
    "a young girl",
    "my brother",
    "the teacher",
    "our neighbour",
    "the small dog",
    "a tired cat",
    "the farmer",
    "her friend",
    "the pilot",
    "a quiet boy",
    "the doctor",
    "his sister",
    "the baker",
    "a tall woman",
    "the captain",
    "my mother",
    "the children",
    "a stranger",
    "the driver",
    "the painter",
    "our guest",
]
_VERBS = [
    "found",
    "painted",
    "carried",
    "opened",
    "cleaned",
    "watched",
    "bought",
    "lost",
    "fixed",
    "followed",
    "moved",
    "picked up",
    "dropped",
    "wrapped",
    "counted",
    "washed",
    "sold",
    "hid",
    "checked",
    "repaired",
]
_OBJECTS = [
    "a red box",
    "the blue door",
    "an empty glass",
    "the heavy stone",
    "a yellow kite",
    "the broken chair",
    "a wooden spoon",
    "the green bottle",
    "a warm coat",
    "the last letter",
    "a paper map",
    "the silver key",
    "a round basket",
    "the tiny bell",
    "a long rope",
    "the white horse",
    "an orange",
    "the black umbrella",
]
_PLACES = [
    "near the river",
    "in the kitchen",
    "behind the house",
    "at the station",
    "under the bridge",
    "on the hill",
    "by the window",
    "in the garden",
    "at the market",
    "across the street",
    "inside the barn",
    "next to the lake",
    "in the morning",
    "after lunch",
    "before dinner",
    "late at night",
    "during the storm",
]
_CLAUSES = [
    "and then went home",
    "because it was raining",
    "while the sun was setting",
    "but nobody noticed",
    "and smiled at everyone",
    "so the day ended well",
    "although it was late",
    "before anyone else arrived",
]
_QUESTIONS = [
    "Where did {s} put {o}?",
    "Why did {s} leave {p}?",
    "Have you seen {o} {p}?",
    "Who {v} {o}?",
]


def generate_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct simple English sentences (statements and questions), reproducible from ``seed``."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot generate {n} distinct sentences from the grammar")
        s, v, o, p = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_PLACES)
        kind = rng.random()
        if kind < 0.5:
            sentence = f"{s} {v} {o} {p}."
        elif kind < 0.8:
            sentence = f"{s} {v} {o} {p}, {rng.choice(_CLAUSES)}."
        else:
            sentence = rng.choice(_QUESTIONS).format(s=s, v=v, o=o, p=p)
        sentence = sentence[0].upper() + sentence[1:]
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


class HibariVoice:
    name = "hibari"

    def __init__(self):
        try:
            from hibari import Hibari
        except ImportError as exc:
            raise ImportError("the hibari voice needs the hibari-tts package: pip install hibari-tts") from exc
        self.tts = Hibari()
        self.sample_rate = int(getattr(self.tts, "sample_rate", 24000))

    def __call__(self, text: str) -> np.ndarray:
        return np.asarray(self.tts(text), dtype=np.float32)


class EspeakVoice:
    def __init__(self, voice: str):
        if shutil.which("espeak-ng") is None:
            raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
        self.voice = voice
        self.name = f"espeak:{voice}"
        self.sample_rate = 22050

    def __call__(self, text: str) -> np.ndarray:
        import soundfile as sf

        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            subprocess.run(["espeak-ng", "-v", self.voice, "-w", tmp.name, text], check=True, capture_output=True)
            data, self.sample_rate = sf.read(tmp.name, dtype="float32")
        return data


def make_voices(names: Sequence[str]):
    voices = []
    for name in names:
        voices.append(HibariVoice() if name == "hibari" else EspeakVoice(name.removeprefix("espeak:")))
    return voices


@dataclass
class CorpusReport:
    utterances: int
    heldout: int
    seconds_of_audio: float
    voices: list[str]


def synthesize_corpus(
    out_dir: str,
    n: int = 3000,
    heldout: int = 50,
    voices: Sequence[str] = ("hibari",),
    seed: int = 0,
    progress: bool = True,
) -> CorpusReport:
    """Write ``wavs/``, ``metadata.csv`` (training rows) and ``metadata_heldout.csv`` to ``out_dir``.

    Sentences are split between voices round-robin; the last ``heldout`` sentences are held out (all
    voices). Audio is 24 kHz (resampled when a voice speaks at another rate).
    """
    import soundfile as sf
    import torch

    from flowtts.audio.resample import resample

    if heldout >= n:
        raise ValueError(f"heldout ({heldout}) must be smaller than n ({n})")
    engines = make_voices(voices)
    sentences = generate_sentences(n, seed)
    os.makedirs(os.path.join(out_dir, "wavs"), exist_ok=True)
    rows: dict[str, list[str]] = {"metadata.csv": [], "metadata_heldout.csv": []}
    total = 0.0
    iterator = list(enumerate(sentences))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="synthesising corpus", unit="utt")
    for i, sentence in iterator:
        split = "metadata_heldout.csv" if i >= n - heldout else "metadata.csv"
        speakers = engines if split == "metadata_heldout.csv" else [engines[i % len(engines)]]
        for engine in speakers:
            wave = engine(sentence)
            if engine.sample_rate != 24000:
                wave = resample(torch.from_numpy(np.ascontiguousarray(wave)), engine.sample_rate, 24000).numpy()
            tag = engine.name.replace(":", "-")
            name = f"wavs/{tag}_{i:05d}.wav"
            sf.write(os.path.join(out_dir, name), np.clip(wave, -1, 1), 24000, subtype="PCM_16")
            total += len(wave) / 24000
            rows[split].append(f"{name}|{sentence}")
    for filename, lines in rows.items():
        with open(os.path.join(out_dir, filename), "w", encoding="utf-8") as f:
            f.write("audio_file|text\n" + "\n".join(lines) + "\n")
    return CorpusReport(
        utterances=len(rows["metadata.csv"]),
        heldout=len(rows["metadata_heldout.csv"]),
        seconds_of_audio=total,
        voices=[e.name for e in engines],
    )
