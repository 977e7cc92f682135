"""The DNSMOS column of ``flowtts eval`` (P.808 MOS), and what it says without speechmos."""

from __future__ import annotations

import csv
import importlib.util
import sys

import pytest
import torch

import flowtts
from conftest import randomise
from flowtts.audio.vocoders import GriffinLim
from flowtts.cli import main
from flowtts.eval.report import DNSMOS_MISSING, SystemScore, format_scores, score_model
from flowtts.model.build import build_model
from flowtts.synthesis import InferenceOptions, prepare_reference
from train.helpers import write_corpus

has_dnsmos = importlib.util.find_spec("speechmos") is not None and importlib.util.find_spec("onnxruntime") is not None
needs_dnsmos = pytest.mark.skipif(not has_dnsmos, reason="speechmos and onnxruntime are not installed")
TEXTS = ["a cat sat", "the dog ran far"]


def _model():
    return randomise(build_model("tiny"), std=0.02).eval()


def _hears_nothing(wave, rate):
    return ""


@pytest.fixture
def no_speechmos(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechmos", None)  # `import speechmos` raises ImportError


def _score(dnsmos: bool) -> SystemScore:
    model = _model()
    options = InferenceOptions(steps=2)
    wave = torch.sin(torch.arange(24000) / 4.0) * 0.1
    reference = prepare_reference(model, wave, "one two", options)
    return score_model(
        model,
        TEXTS,
        [reference] * len(TEXTS),
        asr=_hears_nothing,
        options=options,
        vocoder=GriffinLim(model.mel_spec, n_iter=2),
        dnsmos=dnsmos,
    )


@needs_dnsmos
def test_score_model_predicts_each_waves_quality():
    score = _score(dnsmos=True)
    assert len(score.dnsmos_scores) == len(TEXTS) and all(1.0 <= s <= 5.0 for s in score.dnsmos_scores)
    assert score.dnsmos == pytest.approx(sum(score.dnsmos_scores) / len(TEXTS))
    assert score.row()["DNSMOS"] == f"{score.dnsmos:.2f}"
    assert "DNSMOS" in format_scores([score]).splitlines()[0].split()
    assert _score(dnsmos=False).row()["DNSMOS"] == ""  # not asked for: no column


def test_without_speechmos_the_column_says_how_to_install_it(no_speechmos):
    score = _score(dnsmos=True)
    assert score.dnsmos == DNSMOS_MISSING == "n/a: pip install 'flowtts[eval]'" and score.dnsmos_scores == []
    table = format_scores([score])
    assert "DNSMOS" in table.splitlines()[0] and DNSMOS_MISSING in table.splitlines()[2]


def test_a_silent_wave_has_no_score_and_the_mean_leaves_it_out(monkeypatch):
    import flowtts.eval.dnsmos as module
    from flowtts.eval.report import _predicted_quality
    from flowtts.synthesis import Utterance

    def fake(wave, rate):  # refuses a silent wave as flowtts.eval.dnsmos.prepare_wave does
        if not wave.abs().max() > 0:
            raise ValueError("wave must be finite and not silent")
        return module.DnsmosScore(p808=float(wave.abs().max()) + 3, ovrl=0.0)

    monkeypatch.setattr(module, "dnsmos_available", lambda: True)
    monkeypatch.setattr(module, "dnsmos", fake)
    waves = [torch.zeros(100), torch.full((100,), 0.5)]
    utterances = [Utterance(text="t", wave=w, mel=None, seed=0, sample_rate=24000) for w in waves]
    assert _predicted_quality(utterances) == (3.5, [None, 3.5])
    assert _predicted_quality(utterances[:1]) == ("n/a: silent", [None])


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("heldout")), n=2)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    flowtts.save(_model(), path)
    return str(path)


def _eval(model_file, heldout, out):
    argv = ["eval", "--model", model_file, "--heldout", heldout, "--steps", "2", "-q", "--n", "2"]
    return main([*argv, "--recognizer", "none", "--out", str(out)])


@needs_dnsmos
def test_eval_prints_and_writes_the_dnsmos_column(model_file, heldout, tmp_path, capsys):
    assert _eval(model_file, heldout, tmp_path / "ev") == 0
    table = capsys.readouterr().out.splitlines()
    header = table[0].split()
    assert "DNSMOS" in header
    rows = list(csv.DictReader(open(tmp_path / "ev" / "eval.csv", encoding="utf-8")))
    assert len(rows) == 2 and all(1.0 <= float(r["DNSMOS"]) <= 5.0 for r in rows)  # the model and the recordings
    heard = list(csv.DictReader(open(tmp_path / "ev" / "transcripts.csv", encoding="utf-8")))
    for row in rows:  # the table's DNSMOS is the mean of the sentences'
        mine = [float(h["dnsmos"]) for h in heard if h["system"] == row["system"]]
        assert float(row["DNSMOS"]) == pytest.approx(sum(mine) / len(mine), abs=0.006)


def test_eval_without_speechmos_says_so_in_the_column(model_file, heldout, tmp_path, capsys, no_speechmos):
    assert _eval(model_file, heldout, tmp_path / "ev") == 0
    printed = capsys.readouterr().out
    assert printed.count(DNSMOS_MISSING) == 2  # the model's row and the recordings'
    rows = list(csv.DictReader(open(tmp_path / "ev" / "eval.csv", encoding="utf-8")))
    assert [r["DNSMOS"] for r in rows] == [DNSMOS_MISSING] * 2
