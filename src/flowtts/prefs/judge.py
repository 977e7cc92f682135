"""Machine judges: preferences decided without a listener (records with ``human: false``).

* ``pocketsphinx`` (:class:`RecognizerJudge`): the sample pocketsphinx transcribes with the lower word error
  rate against the text wins; equal rates give ``"same"``.
* ``dnsmos`` (:class:`QualityJudge`): the sample with the higher DNSMOS P.808 score wins; a difference below
  a margin gives ``"same"``.
* ``recording`` (:func:`recording_pair`): the recording of a sentence is preferred over a generated sample
  of it; which side holds the recording is drawn at random, so that a side's position says nothing.

Each judge records its measurement of each side in the side's settings (``wer``, ``dnsmos_p808``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from flowtts.prefs.pairs import Sample, Sampler, make_pair, preference, sample_text
from flowtts.prefs.store import PreferencePair

JUDGES = ("pocketsphinx", "recording", "dnsmos")
DNSMOS_MARGIN = 0.1  # P.808 MOS points; differences below it are within the predictor's noise between seeds


def _decide(score_a: float, score_b: float, margin: float, higher_wins: bool) -> str:
    if abs(score_a - score_b) <= margin:
        return "same"
    return "a" if (score_a > score_b) == higher_wins else "b"


@dataclass
class RecognizerJudge:
    """The sample a recogniser transcribes with the lower word error rate wins (``"same"`` on a tie).

    Attributes:
        transcribe: ``(wave, sample_rate) -> text`` (default: pocketsphinx,
            :class:`flowtts.audio.transcribe.PocketSphinx`).
        name: The ``judge`` of its records.
    """

    transcribe: Callable[[torch.Tensor, int], str] | None = None
    name: str = "pocketsphinx"

    def __post_init__(self):
        if self.transcribe is None:
            from flowtts.audio.transcribe import PocketSphinx

            self.transcribe = PocketSphinx()

    def error_rate(self, text: str, sample: Sample) -> float:
        """The word error rate of ``sample`` against ``text`` (:func:`flowtts.eval.wer.word_error_rate`)."""
        from flowtts.eval.wer import word_error_rate

        return word_error_rate([text], [self.transcribe(sample.wave, sample.sample_rate)])

    def __call__(self, text: str, a: Sample, b: Sample) -> PreferencePair:
        """The machine-judged record of ``a`` against ``b``."""
        wer_a, wer_b = self.error_rate(text, a), self.error_rate(text, b)
        return _record(text, a, b, _decide(wer_a, wer_b, 0.0, higher_wins=False), self.name, "wer", wer_a, wer_b)


@dataclass
class QualityJudge:
    """The sample with the higher predicted quality wins; a difference of at most ``margin`` is ``"same"``.

    Attributes:
        score: ``(wave, sample_rate) -> score`` (default: DNSMOS P.808, :func:`flowtts.eval.dnsmos.dnsmos`).
        margin: Score difference below which the two are the same (>= 0).
        name: The ``judge`` of its records.
    """

    score: Callable[[torch.Tensor, int], float] | None = None
    margin: float = DNSMOS_MARGIN
    name: str = "dnsmos"

    def __post_init__(self):
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)):
            raise ValueError(f"margin must be a number >= 0, got {self.margin!r}")
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"margin must be a number >= 0, got {self.margin!r}")
        if self.score is None:
            from flowtts.eval.dnsmos import dnsmos

            def p808(wave: torch.Tensor, sample_rate: int) -> float:
                return dnsmos(wave, sample_rate).p808

            self.score = p808

    def __call__(self, text: str, a: Sample, b: Sample) -> PreferencePair:
        """The machine-judged record of ``a`` against ``b``."""
        score_a, score_b = self.score(a.wave, a.sample_rate), self.score(b.wave, b.sample_rate)
        choice = _decide(score_a, score_b, self.margin, higher_wins=True)
        return _record(text, a, b, choice, self.name, "dnsmos_p808", score_a, score_b)


def _record(text: str, a: Sample, b: Sample, choice: str, judge: str, key: str, va: float, vb: float):
    a = Sample(**{**a.__dict__, "settings": {**a.settings, key: float(va)}})
    b = Sample(**{**b.__dict__, "settings": {**b.settings, key: float(vb)}})
    return preference(text, a, b, choice, human=False, judge=judge)


def recording_mel(path: str, mel_spec) -> torch.Tensor:
    """The log-mel ``(n, d)`` of the audio file ``path`` under a model's front end ``mel_spec``.

    Raises:
        ValueError: No such file, or one that is not audio.
    """
    import os

    from flowtts.audio.io import read_audio

    if not os.path.isfile(path):
        raise ValueError(f"recording not found: {path}")
    wave, _ = read_audio(path, mel_spec.target_sample_rate)
    with torch.no_grad():
        return mel_spec(wave[None].float())[0].t().float()


def recording_sample(recording_mel: torch.Tensor, generated: Sample, source: str) -> Sample:
    """The recording as a pair's side: its mel ``(n, d)`` after the generated sample's prompt frames (the
    layout ``sample()`` gives a generated one).

    Args:
        recording_mel: The recording's log-mel ``(n, d)`` under the model's mel front end.
        generated: The generated sample it is paired with.
        source: Where it came from (an audio file, a dataset row), for the record's settings.

    Raises:
        ValueError: A mel that is not ``(n, d)`` with the generated sample's ``d``.
    """
    d = generated.mel.shape[1]
    if not isinstance(recording_mel, torch.Tensor) or recording_mel.ndim != 2 or recording_mel.shape[1] != d:
        raise ValueError(
            f"the recording's mel must be (n, {d}) like the model's, got {tuple(getattr(recording_mel, 'shape', ()))}"
            " (prepare the data with the model's mel settings)"
        )
    if recording_mel.shape[0] < 1:
        raise ValueError(f"the recording {source} has no frames")
    prompt = generated.mel[: generated.prompt_frames]
    mel = torch.cat([prompt, recording_mel.float().cpu()], dim=0)
    return Sample(
        mel=mel,
        prompt_frames=generated.prompt_frames,
        prompt_text=generated.prompt_text,
        wave=torch.zeros(0),
        sample_rate=generated.sample_rate,
        settings={"model": "recording", "source": str(source)},
    )


def recording_pair(
    text: str, recording_mel: torch.Tensor, generated: Sample, source: str, rng: random.Random
) -> PreferencePair:
    """The record preferring the recording of ``text`` over ``generated``, the recording on a random side.

    Raises:
        ValueError: As :func:`recording_sample`.
    """
    recording = recording_sample(recording_mel, generated, source)
    if rng.random() < 0.5:
        return preference(text, recording, generated, "a", human=False, judge="recording")
    return preference(text, generated, recording, "b", human=False, judge="recording")


@dataclass
class Row:
    """A sentence to judge pairs of.

    Attributes:
        text: The sentence.
        source: Where its recording is (an audio file, a dataset row), for the records.
        recording: Loads the recording's log-mel ``(n, d)`` (needed by the ``recording`` judge only).
    """

    text: str
    source: str = ""
    recording: Callable[[], torch.Tensor] | None = None


def judged_pairs(
    sampler: Sampler,
    rows: Sequence[Row],
    judge,
    *,
    seed: int = 0,
    on_skip: Callable[[int, str, str], None] | None = None,
) -> Iterator[PreferencePair]:
    """Machine-judged records, one per row: two samples of ``sampler`` judged by ``judge`` (a
    :class:`RecognizerJudge` or :class:`QualityJudge`), or with ``judge="recording"`` the row's recording
    against one sample.

    Row ``i`` samples with seeds ``seed + 2 i`` and ``seed + 2 i + 1`` (``"recording"``: ``seed + i``); the
    recording's side is drawn from ``random.Random(seed)``.

    Args:
        on_skip: Called as ``on_skip(index, text, reason)`` for a row that cannot be paired (a text too long
            for one chunk, a recording that does not fit); without it such a row raises.

    Raises:
        ValueError: A row that cannot be paired (without ``on_skip``).
    """
    rng = random.Random(seed)
    for i, row in enumerate(rows):
        try:
            if judge == "recording":
                if row.recording is None:
                    raise ValueError(f"row {i + 1} has no recording (the recording judge needs audio)")
                generated = sample_text(sampler, row.text, seed + i)
                record = recording_pair(row.text, row.recording(), generated, row.source, rng)
            else:
                a, b = make_pair(sampler, None, row.text, seed, i)
                record = judge(row.text, a, b)
        except ValueError as error:
            if on_skip is None:
                raise
            on_skip(i, row.text, str(error))
            continue
        yield record
