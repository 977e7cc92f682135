"""Reading and writing audio with soundfile: mono float32, resampled to the model's rate."""

from __future__ import annotations

import os

import numpy as np
import torch

from flowtts.audio.resample import resample
from flowtts.utils.files import atomic_output, check_writable_directory


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


def check_audio_output(path: str | os.PathLike, create_directory: bool = False) -> None:
    """``ValueError`` unless ``path`` names an audio file soundfile can write, in a writable directory.

    Meant to run before any work whose result goes there.
    """
    import soundfile as sf

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"output {path} is a directory; give a file name such as {os.path.join(path, 'out.wav')}")
    extension = os.path.splitext(path)[1].lstrip(".")
    known = sorted(f.lower() for f in sf.available_formats())
    if not extension:
        raise ValueError(
            f"output {path} has no extension; name the format, e.g. {path}.wav (known: {', '.join(known)})"
        )
    if extension.upper() not in sf.available_formats():
        raise ValueError(f"output {path}: unknown audio format .{extension} (known: {', '.join(known)})")
    check_writable_directory(os.path.dirname(os.path.abspath(path)), create=create_directory)


def write_audio(path: str | os.PathLike, wave: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write a mono wave atomically (temp file + rename): no partial file is left on failure.

    Raises:
        ValueError: ``path`` cannot be written (see :func:`check_audio_output`), named in the message.
    """
    import soundfile as sf

    path = os.fspath(path)
    check_audio_output(path)
    data = wave.detach().float().cpu().numpy() if torch.is_tensor(wave) else np.asarray(wave, dtype=np.float32)
    try:
        with atomic_output(path) as tmp:
            sf.write(tmp, np.clip(data, -1.0, 1.0), sample_rate, format=os.path.splitext(path)[1][1:].upper())
    except (sf.LibsndfileError, OSError, TypeError, RuntimeError) as error:
        raise ValueError(f"cannot write {path}: {error}") from None
