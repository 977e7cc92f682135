"""Speaker similarity of generated mels, differentiable end to end.

The speaker encoder is the GE2E LSTM of ``resemblyzer`` (3 layers of 256, a 256-d embedding; its
weights ship inside the ``resemblyzer`` wheel, which is only looked up, never imported). That encoder
reads 40-band power mels of 16 kHz audio (25 ms windows, 10 ms hop, audio at -30 dBFS). A model's
log-mel is mapped to those features without audio: the mel bands are spread back over the linear
frequency axis (each FFT bin a triangle-weighted mix of the band levels), squared, read off at the
encoder's frequencies, pooled by its filterbank, resampled in time to 100 frames per second, and
scaled to the mean level of speech at -30 dBFS. Every step is a fixed linear map or a pointwise
function, so gradients reach the generated mel.

``SpeakerSimilarity(model.mel_spec)(mel, prompts)`` is the cosine between the embeddings of each
utterance's generated frames and of its reference frames: the speaker-similarity measure of TTS
papers, usable as a reward (``flowtts reward --reward speaker``) or as an evaluation.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowtts.model.mel import mel_filterbank

ENCODER_RATE = 16_000
ENCODER_FFT = 400  # 25 ms
ENCODER_FPS = 100  # 10 ms hop
ENCODER_BANDS = 40
PARTIAL_FRAMES = 160  # the encoder embeds 1.6 s windows ...
PARTIAL_STEP = 77  # ... every 0.77 s (1.3 per second), and averages them
MIN_COVERAGE = 0.75  # a last window less filled than this is dropped (unless it is the only one)
# Mean of the encoder's power mel over frames and bands for speech at -30 dBFS, measured with
# librosa on the built-in reference clip (tests/eval/test_speaker.py re-measures it).
TARGET_MEAN_POWER = 0.00969


def resemblyzer_weights() -> str:
    """Path of ``pretrained.pt`` inside the installed ``resemblyzer`` package (not imported)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the speaker encoder's weights come with the resemblyzer package: pip install --no-deps resemblyzer"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "pretrained.pt")
    if not os.path.isfile(path):
        raise ImportError(f"resemblyzer is installed but {path} is missing")
    return path


class SpeakerEncoder(nn.Module):
    """GE2E speaker encoder: power-mel frames ``(n, 40)`` -> unit-norm embedding ``(256,)``."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(ENCODER_BANDS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    @classmethod
    def from_file(cls, path: str | None = None) -> SpeakerEncoder:
        """The encoder with ``resemblyzer``'s weights (``path``: its ``pretrained.pt``; default: found)."""
        state = torch.load(path or resemblyzer_weights(), map_location="cpu", weights_only=True)
        state = state.get("model_state", state)
        encoder = cls()
        encoder.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
        return encoder.eval().requires_grad_(False)

    def partials(self, frames: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of windows ``(w, PARTIAL_FRAMES, 40)``."""
        _, (hidden, _) = self.lstm(frames)
        raw = F.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Embedding of one utterance: the normalised mean over its 1.6 s windows (zero-padded at the end)."""
        if frames.ndim != 2 or frames.shape[-1] != ENCODER_BANDS:
            raise ValueError(f"frames must have shape (n, {ENCODER_BANDS}), got {tuple(frames.shape)}")
        starts = window_starts(frames.shape[0])
        padded = F.pad(frames, (0, 0, 0, max(0, starts[-1] + PARTIAL_FRAMES - frames.shape[0])))
        windows = torch.stack([padded[s : s + PARTIAL_FRAMES] for s in starts])
        mean = self.partials(windows).mean(dim=0)
        return mean / mean.norm().clamp(min=1e-12)


def window_starts(n_frames: int) -> list[int]:
    """First frames of the encoder's windows over ``n_frames`` frames (resemblyzer's partial slicing)."""
    span = max(1, n_frames + 1 - PARTIAL_FRAMES + PARTIAL_STEP)
    starts = list(range(0, span, PARTIAL_STEP))
    coverage = (n_frames - starts[-1]) / PARTIAL_FRAMES
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    return starts


class EncoderFeatures(nn.Module):
    """Maps a model's log-mel ``(n, d)`` to the speaker encoder's power-mel frames ``(n', 40)``."""

    def __init__(self, mel_spec):
        super().__init__()
        sample_rate, n_fft = int(mel_spec.target_sample_rate), int(mel_spec.n_fft)
        if sample_rate < ENCODER_RATE:
            raise ValueError(f"the speaker encoder needs mels of audio at >= {ENCODER_RATE} Hz, got {sample_rate}")
        bands = mel_spec.filterbank.double().numpy()  # (d, n_fft // 2 + 1)
        # Band level -> magnitude at each FFT bin: a band's level over its filter's total weight is the
        # magnitude of a flat spectrum under it; each bin mixes the bands covering it by their weights.
        cover = bands.sum(axis=0)  # (bins,)
        spread = (bands / np.maximum(cover, 1e-12)).T / np.maximum(bands.sum(axis=1), 1e-12)[None, :]  # (bins, d)
        # Model bins -> encoder bins (linear interpolation in frequency), then the encoder's filterbank.
        ours = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
        theirs = np.linspace(0.0, ENCODER_RATE / 2, ENCODER_FFT // 2 + 1)
        interp = np.zeros((theirs.size, ours.size))
        pos = np.interp(theirs, ours, np.arange(ours.size))
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, ours.size - 1)
        frac = pos - lo
        interp[np.arange(theirs.size), lo] += 1 - frac
        interp[np.arange(theirs.size), hi] += frac
        self.register_buffer("to_bins", torch.from_numpy(interp @ spread).float(), persistent=False)
        filters = mel_filterbank(ENCODER_RATE, ENCODER_FFT, ENCODER_BANDS, scale="slaney")  # librosa's default
        self.register_buffer("filters", filters, persistent=False)
        self.frame_rate = sample_rate / int(mel_spec.hop_length)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        if log_mel.ndim != 2 or log_mel.shape[-1] != self.to_bins.shape[1]:
            raise ValueError(f"log_mel must have shape (n, {self.to_bins.shape[1]}), got {tuple(log_mel.shape)}")
        level = log_mel.to(self.to_bins.dtype).exp() @ self.to_bins.T  # magnitude at the encoder's FFT bins
        power = (level**2) @ self.filters.T  # (n, 40)
        n_out = max(1, round(power.shape[0] * ENCODER_FPS / self.frame_rate))
        power = F.interpolate(power.T[None], size=n_out, mode="linear", align_corners=True)[0].T
        return power * (TARGET_MEAN_POWER / power.mean().clamp(min=1e-12))


class SpeakerSimilarity(nn.Module):
    """Cosine similarity of the speaker embeddings of generated and reference frames (a reward).

    Args:
        mel_spec: The model's mel front end (``model.mel_spec``), which fixes the mapping to the
            encoder's features.
        encoder: A :class:`SpeakerEncoder` (default: ``resemblyzer``'s weights).
    """

    def __init__(self, mel_spec, encoder: SpeakerEncoder | None = None):
        super().__init__()
        self.features = EncoderFeatures(mel_spec)
        self.encoder = encoder if encoder is not None else SpeakerEncoder.from_file()

    def embed(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Embedding ``(256,)`` of one utterance's log-mel frames ``(n, d)``."""
        return self.encoder(self.features(log_mel))

    def forward(self, mel: torch.Tensor, prompts) -> torch.Tensor:
        """``(b,)`` cosines between each utterance's generated frames and its reference frames."""
        out = []
        for b in range(mel.shape[0]):
            n_ref, n_total = int(prompts.lens[b]), int(prompts.durations[b])
            reference = self.embed(mel[b, :n_ref])
            generated = self.embed(mel[b, n_ref:n_total])
            out.append((reference * generated).sum())
        return torch.stack(out)
