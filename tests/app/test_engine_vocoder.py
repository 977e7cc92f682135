"""The web app's vocoder: the store's choice (``flowtts app --vocoder``), used by every action."""

from __future__ import annotations

import pytest
import soundfile as sf

import flowtts
from conftest import randomise
from flowtts.app import engine
from flowtts.model.build import build_model


@pytest.fixture(scope="module")
def voiced():
    """A small random model whose file records the built-in voice (as the built-in models do)."""
    model = randomise(build_model("tiny"), std=0.02).eval()
    model.metadata = {"vocoder": "builtin"}
    return model


def test_the_store_holds_a_checked_choice():
    assert engine.ModelStore().vocoder == "auto"
    assert engine.ModelStore(vocoder="griffin-lim").vocoder == "griffin-lim"
    with pytest.raises(ValueError, match="vocoder must be one of auto, builtin, griffin-lim"):
        engine.ModelStore(vocoder="hifigan")


def test_speak_and_edit_use_the_choice(voiced, tmp_path):
    waves = {}
    for choice in ("auto", "griffin-lim", "builtin"):
        out = tmp_path / choice
        out.mkdir()
        speech = engine.speak(voiced, None, None, "Hello there.", out_dir=str(out), seed=2, steps=2, vocoder=choice)
        waves[choice] = sf.read(speech.wav)[0]
    assert waves["auto"].shape == waves["griffin-lim"].shape
    assert abs(waves["auto"] - waves["griffin-lim"]).max() > 1e-3 and (waves["auto"] == waves["builtin"]).all()
    with pytest.raises(ValueError, match="vocoder must be one of"):
        engine.speak(voiced, None, None, "Hello.", out_dir=str(tmp_path), steps=2, vocoder="hifigan")
    clip = str(tmp_path / "auto" / "speech.wav")  # the auto run's wav
    edited = [
        engine.edit(voiced, clip, "Hello there.", "0.1-0.3", out_dir=str(tmp_path / v), seed=1, steps=2, vocoder=v)
        for v in ("auto", "griffin-lim")
    ]
    a, b = (sf.read(e.wav)[0] for e in edited)
    assert a.shape == b.shape and abs(a - b).max() > 1e-3


def test_the_built_in_student_speaks_with_the_builtin_vocoder_by_default(tmp_path):
    model = flowtts.load("builtin:student")
    (tmp_path / "gl").mkdir()
    speech = engine.speak(model, None, None, "Hi.", out_dir=str(tmp_path), seed=0)
    plain = engine.speak(model, None, None, "Hi.", out_dir=str(tmp_path / "gl"), seed=0, vocoder="griffin-lim")
    a, b = sf.read(speech.wav)[0], sf.read(plain.wav)[0]
    assert a.shape == b.shape and abs(a - b).max() > 1e-3
