"""Offline English speech recognition with pocketsphinx (``pip install 'flowtts[eval]'``).

Below synthesis: references without a transcript are transcribed here, and evaluation (:mod:`flowtts.eval`)
scores generated speech with the same recogniser.
"""

from __future__ import annotations

import numpy as np
import torch

from flowtts.audio.resample import resample


class PocketSphinx:
    """Transcribe waves with pocketsphinx's built-in generic English model (no download)."""

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise ImportError("speech recognition needs pocketsphinx: pip install 'flowtts[eval]'") from exc
        self.decoder = Decoder(samprate=16000, loglevel="ERROR")

    def __call__(self, wave: torch.Tensor | np.ndarray, sample_rate: int) -> str:
        wave = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        if sample_rate != 16000:
            wave = resample(wave, sample_rate, 16000)
        pcm = (wave.clamp(-1, 1).numpy() * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def transcribe_reference(wave: torch.Tensor, sample_rate: int) -> str:
    """Transcribe an English reference clip offline, for when its transcript is not given.

    F5-TTS transcribes with Whisper, which is downloaded; this uses pocketsphinx's generic English model,
    which ships inside its wheel (``pip install 'flowtts[eval]'``). It is far less accurate, so the
    transcript should be checked, and other languages need ``--ref-text``.

    Raises:
        ImportError: pocketsphinx is not installed.
        ValueError: Nothing was recognised.
    """
    text = PocketSphinx()(wave, sample_rate).strip()
    if not text:
        raise ValueError("no words were recognised in the reference clip; pass its transcript (--ref-text)")
    return text
