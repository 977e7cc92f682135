"""Shortening long silences in a waveform (F5-TTS's ``remove_silence`` option).

F5-TTS splits the output on silences of at least 1 s below -50 dBFS and keeps 0.5 s of silence on
each side of every piece; the effect is that a long pause inside speech becomes 1 s and leading or
trailing silence becomes 0.5 s. :func:`remove_silence` does the same on a float tensor, measuring
loudness in short windows (full scale is 1.0).
"""

from __future__ import annotations

import math

import torch


def silent_windows(wave: torch.Tensor, window: int, threshold_db: float) -> torch.Tensor:
    """Whether each ``window``-sample window (the last may be shorter) is quieter than ``threshold_db`` dBFS.

    Args:
        wave: ``(n,)`` samples, full scale 1.0.
        window: Window length in samples.
        threshold_db: Level in dB relative to full scale; a window whose RMS is below it is silent.

    Returns:
        ``(ceil(n / window),)`` booleans.
    """
    n = wave.numel()
    pad = (-n) % window
    power = torch.nn.functional.pad(wave.double().pow(2), (0, pad)).view(-1, window).sum(1)
    counts = torch.full_like(power, float(window))
    if pad:
        counts[-1] = window - pad
    rms = (power / counts).sqrt()
    return rms < 10.0 ** (threshold_db / 20.0)


def silent_runs(wave: torch.Tensor, window: int, threshold_db: float) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges of consecutive silent windows (see :func:`silent_windows`)."""
    flags = silent_windows(wave, window, threshold_db).tolist()
    runs, k = [], 0
    while k < len(flags):
        if not flags[k]:
            k += 1
            continue
        end = k
        while end < len(flags) and flags[end]:
            end += 1
        runs.append((k * window, min(end * window, wave.numel())))
        k = end
    return runs


def remove_silence(
    wave: torch.Tensor,
    sample_rate: int,
    *,
    threshold_db: float = -50.0,
    min_silence: float = 1.0,
    keep: float = 0.5,
    window: float = 0.01,
) -> torch.Tensor:
    """Shorten every silence of at least ``min_silence`` seconds.

    A long silence between sounds keeps ``keep`` seconds at each end (so it becomes ``2 * keep``
    long); a leading one keeps its last ``keep`` seconds and a trailing one its first. Shorter
    silences and all sound are left as they are. A wave that is silent throughout is returned unchanged.

    Args:
        wave: ``(n,)`` float samples, full scale 1.0.
        sample_rate: Samples per second.
        threshold_db: Windows quieter than this (dBFS) are silent.
        min_silence: Shortest silence (seconds) that is shortened.
        keep: Seconds of silence kept next to sound.
        window: Loudness window in seconds.

    Raises:
        ValueError: ``wave`` is not one-dimensional, or a duration is not positive.
    """
    if wave.dim() != 1:
        raise ValueError(f"wave must be one-dimensional (samples,), got shape {tuple(wave.shape)}")
    for name, value in (("sample_rate", sample_rate), ("min_silence", min_silence), ("window", window)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if keep < 0 or 2 * keep > min_silence:
        raise ValueError(f"keep must be between 0 and min_silence / 2 ({min_silence / 2}), got {keep}")
    n = wave.numel()
    runs = silent_runs(wave, max(1, round(window * sample_rate)), threshold_db)
    if not runs or runs[0] == (0, n):  # no silence, or nothing but silence
        return wave
    keep_n, min_n = round(keep * sample_rate), math.ceil(min_silence * sample_rate)
    pieces, position = [], 0
    for start, end in runs:
        if end - start >= min_n:
            cut_from = start if start == 0 else start + keep_n  # a leading silence keeps only its end
            cut_to = end if end == n else end - keep_n  # a trailing one only its start
            pieces.append(wave[position:cut_from])
            position = cut_to
    pieces.append(wave[position:])
    return torch.cat(pieces)


def speech_bounds(
    wave: torch.Tensor, sample_rate: int, *, threshold_db: float = -50.0, window: float = 0.01
) -> tuple[int, int]:
    """``(start, end)`` samples of ``wave`` without its leading and trailing silence (whole windows
    quieter than ``threshold_db`` dBFS); ``(0, n)`` when it is silent throughout."""
    size = max(1, round(window * sample_rate))
    loud = (~silent_windows(wave, size, threshold_db)).nonzero().flatten()
    if loud.numel() == 0:
        return 0, wave.numel()
    return int(loud[0]) * size, min((int(loud[-1]) + 1) * size, wave.numel())


def trim_edges(
    wave: torch.Tensor, sample_rate: int, *, threshold_db: float = -50.0, window: float = 0.01
) -> torch.Tensor:
    """Drop leading and trailing silence (:func:`speech_bounds`); ``wave`` unchanged when it is silent throughout."""
    start, end = speech_bounds(wave, sample_rate, threshold_db=threshold_db, window=window)
    return wave[start:end]


def clip_at_pause(
    wave: torch.Tensor,
    sample_rate: int,
    max_seconds: float,
    *,
    threshold_db: float = -50.0,
    pauses: tuple[float, ...] = (1.0, 0.1),
    window: float = 0.01,
) -> torch.Tensor:
    """Shorten ``wave`` to at most ``max_seconds``, cutting inside a pause rather than a word.

    The cut goes at the middle of the latest silence that starts before ``max_seconds``, trying
    pauses of at least ``pauses[0]`` seconds first, then ``pauses[1]``, and so on (as F5-TTS does with
    its reference clips); without any such pause the wave is cut at ``max_seconds``.
    """
    limit = int(max_seconds * sample_rate)
    if wave.numel() <= limit:
        return wave
    runs = [r for r in silent_runs(wave, max(1, round(window * sample_rate)), threshold_db) if r[0] > 0]
    for shortest in pauses:
        cuts = [min((a + b) // 2, limit) for a, b in runs if b - a >= shortest * sample_rate and a < limit]
        if cuts:
            return wave[: cuts[-1]]
    return wave[:limit]
