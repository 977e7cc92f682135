"""Machine judges: who wins by which measure, ties, the recording's side, and what their records hold."""

import random

import pytest
import torch

from flowtts.prefs.judge import QualityJudge, RecognizerJudge, Row, judged_pairs, recording_pair, recording_sample
from flowtts.prefs.pairs import Sample
from flowtts.prefs.store import append_pair, read_pairs

TEXT = "the cat sat on the mat"


def _sample(tag: float, frames: int = 6, prompt: int = 1) -> Sample:
    """A sample whose wave's first value is ``tag`` (the fake judges read it)."""
    wave = torch.full((100,), tag)
    mel = torch.cat([torch.zeros(prompt, 4), torch.full((frames - prompt, 4), tag)])
    return Sample(mel=mel, prompt_frames=prompt, prompt_text="", wave=wave, sample_rate=24_000, settings={"seed": 0})


HEARD = {0.1: "the cat sat on the mat", 0.2: "a cat sat on a mat", 0.3: "the hat sat on the mat"}


def _hear(wave, rate):
    return HEARD[round(float(wave[0]), 1)]


def test_the_sample_heard_with_fewer_word_errors_wins_and_a_tie_is_same(tmp_path):
    judge = RecognizerJudge(transcribe=_hear)
    assert judge(TEXT, _sample(0.1), _sample(0.2)).choice == "a"  # 0 errors against 2
    record = judge(TEXT, _sample(0.2), _sample(0.3))
    assert record.choice == "b"  # 2 errors against 1
    assert record.settings_a["wer"] == pytest.approx(2 / 6) and record.settings_b["wer"] == pytest.approx(1 / 6)
    assert judge(TEXT, _sample(0.3), _sample(0.3)).choice == "same"
    assert record.human is False and record.judge == "pocketsphinx"
    append_pair(tmp_path / "p.jsonl", record)
    assert read_pairs(tmp_path / "p.jsonl")[0].judge == "pocketsphinx"


def test_the_higher_quality_wins_beyond_the_margin():
    judge = QualityJudge(score=lambda wave, rate: float(wave[0]) * 10, margin=0.5)
    assert judge(TEXT, _sample(0.1), _sample(0.3)).choice == "b"  # 1 against 3
    assert judge(TEXT, _sample(0.3), _sample(0.1)).choice == "a"
    record = judge(TEXT, _sample(0.1), _sample(0.1))
    assert record.choice == "same" and record.judge == "dnsmos" and not record.human
    close = QualityJudge(score=lambda wave, rate: float(wave[0]), margin=0.5)
    assert close(TEXT, _sample(0.1), _sample(0.3)).choice == "same"  # 0.2 apart, within the margin
    for bad in (-0.1, float("nan"), True):
        with pytest.raises(ValueError, match="margin"):
            QualityJudge(score=lambda wave, rate: 0.0, margin=bad)


def test_the_recording_is_preferred_on_either_side_after_the_samples_prompt_frames():
    generated = _sample(0.2, frames=9, prompt=2)
    recording = torch.full((5, 4), 7.0)
    sides = set()
    rng = random.Random(0)
    for _ in range(20):
        record = recording_pair(TEXT, recording, generated, "wavs/1.wav", rng)
        ours = record.mel_a if record.choice == "a" else record.mel_b
        theirs = record.mel_b if record.choice == "a" else record.mel_a
        assert torch.equal(ours, torch.cat([generated.mel[:2], recording]))
        assert torch.equal(theirs, generated.mel)
        assert record.prompt_frames == 2 and record.judge == "recording" and record.human is False
        settings = record.settings_a if record.choice == "a" else record.settings_b
        assert settings == {"model": "recording", "source": "wavs/1.wav"}
        sides.add(record.choice)
    assert sides == {"a", "b"}
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        recording_sample(torch.zeros(5, 3), generated, "x")


def test_rows_that_cannot_be_paired_are_skipped_when_asked_or_refused():
    from flowtts.prefs.pairs import Sampler

    sampler = Sampler(model=None, options=None, name="m", reference=None, vocoder=None)
    rows = [Row("no recording here")]
    with pytest.raises(ValueError, match="no recording"):
        list(judged_pairs(sampler, rows, "recording"))
    skipped = []
    made = list(judged_pairs(sampler, rows, "recording", on_skip=lambda i, t, why: skipped.append((i, why))))
    assert made == [] and skipped[0][0] == 0 and "no recording" in skipped[0][1]


def test_pocketsphinx_and_dnsmos_judge_real_speech_against_noise():
    """The real measures: the built-in student's speech beats noise by both."""
    pytest.importorskip("pocketsphinx", reason="the pocketsphinx judge needs pocketsphinx")
    import flowtts
    from flowtts.prefs.pairs import make_sampler, sample_text

    sampler = make_sampler(flowtts.load("builtin:student"), "builtin:student")
    speech = sample_text(sampler, "The birch canoe slid on the smooth planks.", 0)
    noise = Sample(
        **{**speech.__dict__, "wave": 0.3 * torch.randn(speech.wave.shape, generator=torch.Generator().manual_seed(0))}
    )
    record = RecognizerJudge()("The birch canoe slid on the smooth planks.", speech, noise)
    assert record.settings_a["wer"] < record.settings_b["wer"] and record.choice == "a"
    from flowtts.eval.dnsmos import dnsmos_available

    if dnsmos_available():
        record = QualityJudge()("The birch canoe slid on the smooth planks.", noise, speech)
        assert record.choice == "b" and record.settings_b["dnsmos_p808"] > record.settings_a["dnsmos_p808"]
