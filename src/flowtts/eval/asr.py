"""Offline English speech recognition with pocketsphinx (``pip install 'flowtts[eval]'``)."""

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
