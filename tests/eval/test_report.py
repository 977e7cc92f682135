import csv
import importlib.util

import pytest
import torch

from conftest import randomise
from flowtts.audio.vocoders import GriffinLim
from flowtts.cli import main
from flowtts.eval.report import SystemScore, format_scores, score_model, score_recordings
from flowtts.eval.wer import word_error_rate
from flowtts.model.build import build_model
from flowtts.synthesis import InferenceOptions, prepare_reference, synthesize
from train.helpers import write_corpus

TEXTS = ["a cat sat", "the dog ran far", "blue sky"]
has_encoder = importlib.util.find_spec("resemblyzer") is not None


def _model():
    return randomise(build_model("tiny"), std=0.02).eval()


def _references(model, options):
    g = torch.Generator().manual_seed(0)
    waves = [torch.sin(torch.arange(24000) / k) * 0.1 + 0.01 * torch.randn(24000, generator=g) for k in (4.0, 7.0)]
    return [prepare_reference(model, w, t, options) for w, t in zip(waves, ("one two", "three four"))]


class EchoEvery2nd:
    """A stand-in recogniser: hears sentence texts by call order, every second one wrongly."""

    def __init__(self, texts):
        self.texts, self.calls = texts, 0

    def __call__(self, wave, rate):
        text = self.texts[self.calls % len(self.texts)]
        self.calls += 1
        return text if self.calls % 2 else "something else entirely"


def test_score_model_synthesises_with_each_texts_reference_and_scores_what_was_heard():
    model = _model()
    options = InferenceOptions(steps=3)
    ref_a, ref_b = _references(model, options)
    references = [ref_a, ref_b, ref_a]
    saved = {}
    score = score_model(
        model,
        TEXTS,
        references,
        asr=EchoEvery2nd(TEXTS),
        options=options,
        vocoder=GriffinLim(model.mel_spec, n_iter=2),
        seeds=[5, 6, 7],
        label="tiny",
        on_utterance=lambda i, u: saved.__setitem__(i, u),
    )
    heard = [TEXTS[0], "something else entirely", TEXTS[2]]
    assert score.transcripts == heard and score.wer == word_error_rate(TEXTS, heard) and 0 < score.wer < 2
    assert score.sim is None and score.sims == [] and score.seconds > 0
    # Each text equals synthesize() with its own reference and seed (texts sharing one are batched).
    vocoder = GriffinLim(model.mel_spec, n_iter=2)
    alone = synthesize(model, ref_b, [TEXTS[1]], vocoder=vocoder, options=options, seeds=[6], progress=False)[0]
    assert torch.allclose(saved[1].mel, alone.mel, atol=1e-5)
    pair = synthesize(
        model, ref_a, [TEXTS[0], TEXTS[2]], vocoder=vocoder, options=options, seeds=[5, 7], progress=False
    )
    assert torch.allclose(saved[2].mel, pair[1].mel, atol=1e-5)
    assert abs(score.audio_seconds - sum(u.wave.numel() for u in saved.values()) / 24000) < 1e-9
    with pytest.raises(ValueError, match="got 2 references for 3 texts"):
        score_model(model, TEXTS, [ref_a, ref_b], asr=None, options=options, vocoder=vocoder)


@pytest.mark.skipif(not has_encoder, reason="resemblyzer (the speaker encoder's weights) not installed")
def test_a_recording_of_the_prompt_itself_has_similarity_one():
    from flowtts.eval.report import speaker_similarity_or_none

    model = _model()
    options = InferenceOptions()
    ref_a, ref_b = _references(model, options)
    # The prompt's own frames as "recordings": cosine 1 with its prompt; the other clip's: lower.
    similarity = speaker_similarity_or_none(model.mel_spec)
    waves = [GriffinLim(model.mel_spec)(ref.mel[0].t())[0] for ref in (ref_a, ref_b)]
    score = score_recordings(
        waves, ["x", "y"], [ref_a, ref_a], sample_rate=24000, mel_spec=model.mel_spec, asr=lambda w, r: "x",
        similarity=similarity,
    )  # fmt: skip
    assert score.sims[0] > 0.97 and score.sims[1] < score.sims[0] - 0.01
    assert abs(score.sim - sum(score.sims) / 2) < 1e-12


def test_table_drops_empty_columns():
    a = SystemScore("model", wer=0.5, sim=None, seconds=2.0, audio_seconds=4.0, transcripts=["a", "b"])
    b = SystemScore("corpus recordings", wer=0.25, sim=None, seconds=None, audio_seconds=5.0, transcripts=["a", "b"])
    text = format_scores([a, b])
    header = text.splitlines()[0].split()
    assert "SIM" not in header and header[:2] == ["system", "utterances"] and "RTF" in header
    assert "0.500" in text and "0.250" in text and text.splitlines()[2].split()[-1] == "0.500"  # RTF = 2 / 4


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("heldout")), n=3)


def _eval(model_file, heldout, *extra):
    return main(["eval", "--model", model_file, "--heldout", heldout, "--steps", "2", "-q", *extra])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import flowtts

    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    flowtts.save(_model(), path)
    return str(path)


def test_eval_command_writes_its_table_and_transcripts(model_file, heldout, tmp_path, capsys):
    out = tmp_path / "ev"
    assert _eval(model_file, heldout, "--cross-sentence", "--out", str(out), "--save-audio", "--n", "2") == 0
    printed = capsys.readouterr().out
    assert "corpus recordings" in printed and "(2 steps, cfg 2)" in printed
    rows = list(csv.DictReader(open(out / "eval.csv", encoding="utf-8")))
    assert [r["utterances"] for r in rows] == ["2", "2"]
    heard = list(csv.DictReader(open(out / "transcripts.csv", encoding="utf-8")))
    assert len(heard) == 4 and heard[0]["text"] == "a cat sat"
    for row in rows:  # the table's WER is the transcripts' WER
        mine = [h for h in heard if h["system"] == row["system"]]
        assert f"{word_error_rate([h['text'] for h in mine], [h['heard'] for h in mine]):.3f}" == row["WER"]
    assert sorted(p.name for p in (out / "system0").iterdir()) == ["0000.wav", "0001.wav"]
    assert rows[0]["SIM"] if has_encoder else not rows[0]["SIM"]
    for row in rows:  # the CTC recogniser's column is the WER of what it heard
        mine = [h for h in heard if h["system"] == row["system"]]
        assert all(h["heard_ctc"] is not None for h in mine)
        assert f"{word_error_rate([h['text'] for h in mine], [h['heard_ctc'] for h in mine]):.3f}" == row["CTC WER"]
    assert _eval(model_file, heldout, "--n", "1", "--recognizer", "none", "--no-recordings") == 0
    assert "CTC WER" not in capsys.readouterr().out


def test_eval_speed_stretches_the_estimated_durations(model_file, heldout, tmp_path, capsys):
    import os

    longer = os.path.join(os.path.dirname(heldout), "longer.csv")  # texts of 10+ bytes: upstream's rule slows
    with open(longer, "w", encoding="utf-8") as f:  # shorter ones to 0.3 whatever the speed
        f.write("audio_file|text\nwavs/000.wav|the dog ran far\nwavs/001.wav|red fox jumps high\n")
    seconds = {}
    for speed in ("1", "0.5"):
        out = tmp_path / f"ev{speed}"
        quiet = ["--n", "2", "--recognizer", "none", "--no-recordings", "--out", str(out)]
        assert _eval(model_file, longer, "--cross-sentence", "--speed", speed, *quiet) == 0
        (row,) = csv.DictReader(open(out / "eval.csv", encoding="utf-8"))
        seconds[speed] = float(row["audio s"])
    assert "(2 steps, cfg 2, speed 0.5)" in capsys.readouterr().out
    assert 1.8 < seconds["0.5"] / seconds["1"] < 2.2  # the generated part is twice as long


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n", "0"], "--n must be >= 1"),
        (["--speed", "0"], "--speed must be a positive number, got 0.0"),
        (["--ref-silence", "-1"], "--ref-silence must be a number of seconds >= 0, at most 10, got -1.0"),
        (["--target-rms", "nan"], "--target-rms must be a positive number, at most 1, got nan"),
        (["--cross-sentence", "--ref-audio", "x.wav", "--ref-text", "x"], "drop --ref-audio/--ref-text"),
        (["--ref-audio", "x.wav"], "--ref-audio and --ref-text go together"),
        (["--cross-sentence", "--n", "1"], "--cross-sentence needs at least 2"),
    ],
)
def test_eval_command_errors(model_file, heldout, tmp_path, capsys, extra, message):
    assert _eval(model_file, heldout, "--out", str(tmp_path / "ev"), *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


def test_a_missing_or_too_short_recording_is_refused_before_any_model_runs(model_file, heldout, tmp_path, capsys):
    import os

    import numpy as np
    import soundfile as sf

    import flowtts.cli.evaluate as evaluate

    folder = os.path.dirname(heldout)
    sf.write(os.path.join(folder, "blip.wav"), np.zeros(240, dtype="float32"), 24_000)  # 10 ms
    cases = {"blip.wav": "lasts 0.010 s, under the 0.05 s", "none.wav": "cannot read the recording"}
    for name, message in cases.items():
        table = os.path.join(folder, f"{name}.csv")  # next to the corpus: the paths are relative to it
        with open(table, "w", encoding="utf-8") as f:
            f.write(f"audio_file|text\nwavs/000.wav|a cat sat\n{name}|a dog\n")
        for extra in ([], ["--cross-sentence", "--no-recordings"]):  # scored, or a prompt
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(evaluate, "_score_model", lambda *a: pytest.fail("a model ran before the check"))
                assert _eval(model_file, str(table), "--out", str(tmp_path / "ev"), *extra) == 2
            err = capsys.readouterr().err
            assert message in err and name in err and len(err.strip().splitlines()) == 1, err
            assert not (tmp_path / "ev").exists()
    table = os.path.join(folder, "none.wav.csv")
    assert _eval(model_file, str(table), "--no-recordings", "--recognizer", "none", "--n", "2") == 0  # not read
