"""flowtts.audio.pcm against pydub (which F5-TTS prepares its references with): lengths, slices, loudness,
silence detection and splitting, leading silence, appended silence -- on clips built to sit on the edges."""

import numpy as np
import pytest

from flowtts.audio.pcm import (
    PcmClip,
    detect_leading_silence,
    detect_nonsilent,
    detect_silence,
    silence_frames,
    split_on_silence,
    trim_silent_edges,
)

pydub = pytest.importorskip("pydub")  # the test extra installs it
from pydub import AudioSegment  # noqa: E402
from pydub import silence as pydub_silence  # noqa: E402


def _clip(rate: int, channels: int, seed: int, seconds: float = 4.3) -> np.ndarray:
    """Integer samples: bursts between pauses at levels around -60..-35 dBFS, odd lengths."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate) + int(rng.integers(0, 97))  # not a whole number of milliseconds
    x = rng.normal(0, 10 ** (rng.uniform(-75, -52) / 20), (n, channels))
    position = int(rng.integers(0, rate // 3))
    while position < n:
        length = int(rng.uniform(0.05, 0.9) * rate)
        level = 10 ** (rng.uniform(-48, -8) / 20)
        ramp = np.sin(np.linspace(0, np.pi, max(length, 1)))[: max(0, min(length, n - position))]
        x[position : position + len(ramp)] += level * ramp[:, None] * rng.normal(0, 1, (len(ramp), channels))
        position += length + int(rng.uniform(0.05, 1.6) * rate)
    return np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)


def _pair(rate, channels, seed):
    ints = _clip(rate, channels, seed)
    segment = AudioSegment(ints.tobytes(), frame_rate=rate, sample_width=2, channels=channels)
    return PcmClip(ints.astype(np.int64), rate), segment


def _same(clip: PcmClip, segment) -> bool:
    ints = np.frombuffer(segment.raw_data, dtype=np.int16).reshape(-1, segment.channels)
    return clip.rate == segment.frame_rate and np.array_equal(clip.samples, ints)


CLIPS = [(24000, 1, 0), (24000, 1, 1), (44100, 2, 2), (22050, 1, 3), (16000, 1, 4), (48000, 2, 5)]


@pytest.mark.parametrize("rate, channels, seed", CLIPS)
def test_lengths_slices_and_loudness_are_pydubs(rate, channels, seed):
    clip, segment = _pair(rate, channels, seed)
    assert len(clip) == len(segment)
    rng = np.random.default_rng(seed)
    for _ in range(40):
        a, b = sorted(int(v) for v in rng.integers(0, len(clip) + 3, 2))
        piece, theirs = clip.cut(a, b), segment[a:b]
        assert _same(piece, theirs)
        assert piece.rms == theirs.rms and piece.dbfs == theirs.dBFS
    assert _same(clip.cut(len(clip) - 7), segment[len(segment) - 7 :])  # to the end: rounding pads or drops


@pytest.mark.parametrize("rate, channels, seed", CLIPS)
def test_silence_detection_and_splitting_are_pydubs(rate, channels, seed):
    clip, segment = _pair(rate, channels, seed)
    settings = ((1000, -50, 1000, 10), (100, -40, 1000, 10), (1000, -50, 500, 10), (300, -45, 50, 7))
    for min_len, threshold, keep, step in settings:
        assert detect_silence(clip, min_len, threshold, step) == pydub_silence.detect_silence(
            segment, min_len, threshold, step
        )
        assert detect_nonsilent(clip, min_len, threshold, step) == pydub_silence.detect_nonsilent(
            segment, min_len, threshold, step
        )
        ours = split_on_silence(clip, min_len, threshold, keep, step)
        theirs = pydub_silence.split_on_silence(segment, min_len, threshold, keep, step)
        assert len(ours) == len(theirs) and all(_same(a, b) for a, b in zip(ours, theirs))
    for threshold in (-50, -42, -30):
        assert detect_leading_silence(clip, threshold) == pydub_silence.detect_leading_silence(segment, threshold)
        reverse = segment.reverse()
        assert detect_leading_silence(clip.reversed(), threshold) == pydub_silence.detect_leading_silence(
            reverse, threshold
        )


def test_edges_trimmed_and_silence_appended_as_f5tts_does_with_pydub():
    for rate, channels, seed in CLIPS:
        clip, segment = _pair(rate, channels, seed)
        start = pydub_silence.detect_leading_silence(segment, silence_threshold=-42)
        trimmed = segment[start:]
        end = pydub_silence.detect_leading_silence(trimmed.reverse(), silence_threshold=-42)
        trimmed = trimmed[: len(trimmed) - end] if end > 0 else trimmed
        assert _same(trim_silent_edges(clip, -42), trimmed)
        for ms in (50, 500, 1, 0):
            assert silence_frames(ms, rate) == len((trimmed + AudioSegment.silent(duration=ms)).raw_data) // (
                2 * channels
            ) - len(trimmed.raw_data) // (2 * channels)
    assert silence_frames(50, 24000) == 1198  # F5-TTS's "50 ms" at 24 kHz
