"""Integer PCM clips measured in milliseconds, as F5-TTS measures its reference clips (through pydub).

F5-TTS prepares a reference clip and shortens silences with pydub's ``AudioSegment`` and ``silence``
helpers. Where those cut depends on pydub's own arithmetic, not on any textbook silence detector:

* a clip's length is ``round(1000 * frames / rate)`` milliseconds, and a slice ``[a:b]`` (milliseconds)
  runs from frame ``int(a * (rate / 1000))`` to frame ``int(b * (rate / 1000))``; a slice ending past the
  last frame (the rounding can ask for up to half a millisecond more) is padded with zero frames;
* loudness is the integer RMS of the integer samples of every channel together
  (``floor(sqrt(sum(x**2) / count))``, stdlib ``audioop.rms``), compared with a dBFS threshold either as
  ``rms <= 10 ** (dB / 20) * full_scale`` (silence detection) or as ``20 * log(rms / full_scale, 10) < dB``
  (leading silence, where an RMS of 0 is minus infinity); ``full_scale`` is ``2 ** (bits - 1)``;
* ``AudioSegment.silent(ms)`` is made at 11025 Hz (``int(11025 * ms / 1000)`` frames) and converted to the
  clip's rate with ``audioop.ratecv`` when it is appended, which gives ``out * (frames - 1) // in + 1``
  frames (rates divided by their gcd): F5-TTS's "50 ms" is 1198 frames at 24 kHz, not 1200.

:class:`PcmClip` and the functions below reproduce those rules with numpy, so that flowtts cuts a clip
where F5-TTS cuts it without depending on pydub (whose ``audioop`` left the standard library in Python
3.13). Nothing here is pydub's code: the rules were read from pydub 0.25.1's behaviour.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass

import numpy as np

SILENT_RATE = 11025  # pydub's AudioSegment.silent() default frame rate


@dataclass(frozen=True)
class PcmClip:
    """Integer samples ``(frames, channels)`` at ``rate``; ``full_scale`` is ``2 ** (bits - 1)``."""

    samples: np.ndarray
    rate: int
    full_scale: float = 32768.0

    @classmethod
    def from_float(cls, wave, rate: int, bits: int = 16) -> PcmClip:
        """A float wave (``(n,)`` or ``(n, channels)``, full scale 1.0) as ``bits``-bit integers (rounded, clipped)."""
        data = np.asarray(wave, dtype=np.float64)
        if data.ndim == 1:
            data = data[:, None]
        scale = float(2 ** (bits - 1))
        ints = np.clip(np.round(data * scale), -scale, scale - 1).astype(np.int64)
        return cls(ints, int(rate), scale)

    @classmethod
    def read(cls, path: str | os.PathLike) -> PcmClip:
        """A sound file's integer samples at its own rate and channel count.

        16-bit PCM keeps its exact integers and 24/32-bit PCM its exact values as 32-bit integers (pydub
        widens 24-bit samples); 8-bit PCM is read as 16-bit (F5-TTS widens it when it first appends it);
        other encodings (float, compressed) as 32-bit integers, near what pydub's ffmpeg conversion gives.

        Raises:
            FileNotFoundError: No such file.
            ValueError: Not audio soundfile can decode, or no samples.
        """
        import soundfile as sf

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"audio file not found: {path}")
        try:
            subtype = sf.info(path).subtype
            data, rate = sf.read(path, dtype="float64", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise ValueError(f"cannot read audio file {path}: {exc}") from exc
        if data.size == 0:
            raise ValueError(f"audio file {path} holds no samples")
        bits = 16 if subtype in ("PCM_U8", "PCM_S8", "PCM_16") else 32
        return cls.from_float(data, rate, bits)

    @property
    def channels(self) -> int:
        return self.samples.shape[1]

    @property
    def frames(self) -> int:
        return self.samples.shape[0]

    def __len__(self) -> int:
        """Milliseconds, rounded as pydub rounds them (Python's ``round``: half to even)."""
        return round(1000 * (self.frames / self.rate))

    def cut(self, start: float = 0, end: float | None = None) -> PcmClip:
        """The slice ``[start:end]`` in milliseconds (``end`` ``None``: to the end), as pydub slices it
        (:func:`ms_range`)."""
        first, last, missing = ms_range(self, start, end)
        piece = self.samples[first:last]
        if missing:
            piece = np.concatenate((piece, np.zeros((missing, self.channels), dtype=piece.dtype)))
        return PcmClip(piece, self.rate, self.full_scale)

    def __add__(self, other: PcmClip) -> PcmClip:
        return PcmClip(np.concatenate((self.samples, other.samples)), self.rate, self.full_scale)

    def reversed(self) -> PcmClip:
        return PcmClip(self.samples[::-1], self.rate, self.full_scale)

    @property
    def rms(self) -> int:
        """``floor(sqrt(mean of the squared samples of every channel)))``, 0 for an empty clip."""
        count = self.samples.size
        if count == 0:
            return 0
        if self.full_scale <= 2**15:  # exact in int64, and so equal to a running sum in double
            total = float(np.square(self.samples).sum())
        else:  # a running sum in double, in order, as audioop accumulates it
            total = float(np.cumsum(np.square(self.samples.astype(np.float64)).ravel())[-1])
        return int(math.sqrt(total / count))

    @property
    def dbfs(self) -> float:
        """Loudness in dB relative to full scale (minus infinity for an RMS of 0), as pydub's ``dBFS``."""
        rms = self.rms
        if not rms:
            return -math.inf
        return 20 * math.log(rms / self.full_scale, 10)

    def empty(self) -> PcmClip:
        return PcmClip(self.samples[:0], self.rate, self.full_scale)


def ms_range(clip: PcmClip, start: float = 0, end: float | None = None) -> tuple[int, int, int]:
    """``(first, last, missing)``: the frames ``[first:last]`` that pydub's slice ``[start:end]`` (milliseconds;
    ``end`` ``None``: the end) takes, and how many zero frames it appends because ``last`` is past the clip.

    Both ends are first limited to the length in milliseconds (:meth:`PcmClip.__len__`), then turned into
    frames by truncating ``ms * (rate / 1000)``.
    """
    length = len(clip)
    start = min(start, length)
    end = length if end is None else min(end, length)
    first, last = int(start * (clip.rate / 1000.0)), int(end * (clip.rate / 1000.0))
    n = clip.frames
    missing = max(last - first, 0) - max(min(last, n) - min(first, n), 0)  # asked for, less what exists
    return min(first, n), max(min(last, n), min(first, n)), missing


def silence_frames(ms: float, rate: int) -> int:
    """Frames of pydub's ``AudioSegment.silent(ms)`` once appended to a clip at ``rate``: made at 11025 Hz,
    then converted by ``audioop.ratecv``, whose output count for ``n`` input frames is
    ``out * (n - 1) // in + 1`` with the rates divided by their gcd (checked against audioop for common rates)."""
    n = int(SILENT_RATE * (ms / 1000.0))
    if rate == SILENT_RATE or n == 0:
        return n
    g = math.gcd(SILENT_RATE, rate)
    return (rate // g) * (n - 1) // (SILENT_RATE // g) + 1


def silence(clip: PcmClip, ms: float) -> PcmClip:
    """Zero frames as pydub appends ``AudioSegment.silent(ms)`` to ``clip`` (see :func:`silence_frames`)."""
    zeros = np.zeros((silence_frames(ms, clip.rate), clip.channels), dtype=clip.samples.dtype)
    return PcmClip(zeros, clip.rate, clip.full_scale)


def detect_silence(clip: PcmClip, min_silence_len: int, silence_thresh: float, seek_step: int) -> list[list[int]]:
    """``[start, end]`` milliseconds of the silences at least ``min_silence_len`` long.

    A window of ``min_silence_len`` ms is tried every ``seek_step`` ms (and once at the very end); it is
    silent when its integer RMS is at most ``10 ** (silence_thresh / 20) * full_scale``. Silent windows
    that touch or overlap merge into one range.
    """
    length = len(clip)
    if length < min_silence_len:
        return []
    limit = 10 ** (float(silence_thresh) / 20) * clip.full_scale
    last_start = length - min_silence_len
    starts = range(0, last_start + 1, seek_step)
    if last_start % seek_step:
        starts = itertools.chain(starts, [last_start])
    silent = [i for i in starts if clip.cut(i, i + min_silence_len).rms <= limit]
    if not silent:
        return []
    ranges = []
    range_start = previous = silent[0]
    for start in silent[1:]:
        continuous = start == previous + seek_step
        gap = start > previous + min_silence_len  # windows that overlap belong to one silence
        if not continuous and gap:
            ranges.append([range_start, previous + min_silence_len])
            range_start = start
        previous = start
    ranges.append([range_start, previous + min_silence_len])
    return ranges


def detect_nonsilent(clip: PcmClip, min_silence_len: int, silence_thresh: float, seek_step: int) -> list[list[int]]:
    """``[start, end]`` milliseconds between the silences of :func:`detect_silence` (all of it without any)."""
    silences = detect_silence(clip, min_silence_len, silence_thresh, seek_step)
    length = len(clip)
    if not silences:
        return [[0, length]]
    if silences[0] == [0, length]:
        return []
    ranges, previous_end = [], 0
    for start, end in silences:
        ranges.append([previous_end, start])
        previous_end = end
    if silences[-1][1] != length:
        ranges.append([previous_end, length])
    if ranges[0] == [0, 0]:
        ranges.pop(0)
    return ranges


def sounding_ranges(
    clip: PcmClip, min_silence_len: int, silence_thresh: float, keep_silence: int, seek_step: int
) -> list[list[int]]:
    """``[start, end]`` milliseconds of the parts :func:`split_on_silence` returns: each sounding range of
    :func:`detect_nonsilent` widened by ``keep_silence`` ms on both sides, limited to the clip; where two
    would overlap they meet half-way (integer milliseconds)."""
    ranges = [
        [start - keep_silence, end + keep_silence]
        for start, end in detect_nonsilent(clip, min_silence_len, silence_thresh, seek_step)
    ]
    for left, right in zip(ranges, ranges[1:]):
        if right[0] < left[1]:
            left[1] = (left[1] + right[0]) // 2
            right[0] = left[1]
    length = len(clip)
    return [[max(start, 0), min(end, length)] for start, end in ranges]


def split_on_silence(
    clip: PcmClip, min_silence_len: int, silence_thresh: float, keep_silence: int, seek_step: int
) -> list[PcmClip]:
    """The parts of ``clip`` at :func:`sounding_ranges` (pydub's ``silence.split_on_silence``)."""
    return [
        clip.cut(start, end)
        for start, end in sounding_ranges(clip, min_silence_len, silence_thresh, keep_silence, seek_step)
    ]


def detect_leading_silence(clip: PcmClip, silence_threshold: float, chunk_size: int = 10) -> int:
    """Milliseconds before the first ``chunk_size``-ms chunk at least ``silence_threshold`` dBFS loud."""
    trim = 0
    length = len(clip)
    while trim < length and clip.cut(trim, trim + chunk_size).dbfs < silence_threshold:
        trim += chunk_size
    return min(trim, length)


def trim_silent_edges(clip: PcmClip, silence_threshold: float) -> PcmClip:
    """``clip`` without the leading and trailing silence :func:`detect_leading_silence` finds (F5-TTS's
    ``remove_silence_edges``: the end is found on the reversed clip and cut in milliseconds)."""
    clip = clip.cut(detect_leading_silence(clip, silence_threshold))
    end = detect_leading_silence(clip.reversed(), silence_threshold)
    return clip.cut(0, len(clip) - end) if end > 0 else clip
