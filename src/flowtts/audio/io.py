"""Reading and writing audio with soundfile: mono float32, resampled to the model's rate."""

from __future__ import annotations

import os

import numpy as np
import torch

from flowtts.audio.resample import resample
from flowtts.utils.files import atomic_output


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Read any file soundfile can read, downmix to mono, optionally resample.

    Returns:
        ``(wave, rate)``: a float32 tensor ``(nw,)`` and its sample rate.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not audio soundfile can decode, or holds no samples.
    """
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    if data.size == 0:
        raise ValueError(f"audio file {path} holds no samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sample_rate is not None and rate != sample_rate:
        wave = resample(wave, rate, sample_rate)
        rate = sample_rate
    return wave, rate


def write_audio(path: str | os.PathLike, wave: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write a mono wave atomically (temp file + rename): no partial file is left on failure."""
    import soundfile as sf

    path = os.fspath(path)
    data = wave.detach().float().cpu().numpy() if torch.is_tensor(wave) else np.asarray(wave, dtype=np.float32)
    with atomic_output(path) as tmp:
        sf.write(tmp, np.clip(data, -1.0, 1.0), sample_rate)
