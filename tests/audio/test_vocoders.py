"""Choosing a vocoder (``choose_vocoder``: auto, builtin, griffin-lim, a file) and gradients through Griffin-Lim."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import flowtts
from conftest import randomise
from flowtts.audio.vocoders import GriffinLim, check_vocoder_choice, choose_vocoder, vocoder_name
from flowtts.config import MelConfig
from flowtts.model.build import build_model
from flowtts.model.mel import MelSpec
from flowtts.vocoder.files import save_vocoder
from flowtts.vocoder.network import MelVocoder
from vocoder.helpers import SMALL_MEL, small_vocoder


@pytest.fixture(scope="module")
def student():
    return flowtts.load("builtin:student")


@pytest.fixture(scope="module")
def tiny():
    return randomise(build_model("tiny"), std=0.02).eval()  # the built-in front end, no vocoder record


def test_a_builtin_model_gets_the_builtin_vocoder_frozen_and_differentiable(student):
    assert student.metadata["vocoder"] == "builtin"
    vocoder = choose_vocoder(student)
    assert isinstance(vocoder, MelVocoder) and not vocoder.training
    assert not any(p.requires_grad for p in vocoder.parameters())
    mel = torch.full((1, 100, 6), -4.0, requires_grad=True)
    vocoder(mel).pow(2).sum().backward()  # the weights need no gradient, the mel still gets one
    assert mel.grad is not None and mel.grad.abs().sum() > 0
    assert vocoder_name(vocoder) == "neural"


def test_a_model_without_the_record_gets_griffin_lim_and_griffin_lim_can_be_forced(student, tiny):
    assert tiny.metadata is None or "vocoder" not in tiny.metadata
    assert isinstance(choose_vocoder(tiny), GriffinLim)
    assert isinstance(choose_vocoder(student, "griffin-lim"), GriffinLim)
    assert isinstance(choose_vocoder(tiny, "builtin"), MelVocoder)  # the same front end: asked for, it is used
    assert isinstance(choose_vocoder(MelSpec()), GriffinLim)  # a front end alone records no voice
    assert vocoder_name(choose_vocoder(tiny)) == "Griffin-Lim"


def test_a_vocoder_file_is_used_for_its_own_front_end_and_refused_for_another(student, tmp_path):
    other = tmp_path / "small.safetensors"
    save_vocoder(small_vocoder(), str(other))
    with pytest.raises(ValueError) as refused:
        choose_vocoder(student, str(other))
    message = str(refused.value)
    assert f"'n_mel_channels': {SMALL_MEL.n_mel_channels}" in message and "'n_mel_channels': 100" in message
    assert f"'hop_length': {SMALL_MEL.hop_length}" in message and "'hop_length': 256" in message
    small = MelSpec(**dataclasses.asdict(SMALL_MEL))
    assert isinstance(choose_vocoder(small, other), MelVocoder)  # a PathLike is a file too
    assert isinstance(choose_vocoder(SMALL_MEL, str(other)), MelVocoder)
    with pytest.raises(ValueError, match="'n_mel_channels': 12"):
        choose_vocoder(small, "builtin")


def test_auto_falls_back_to_griffin_lim_when_the_record_does_not_fit_the_front_end(caplog):
    from flowtts.config import get_preset

    model = build_model(dataclasses.replace(get_preset("tiny"), mel=MelConfig(n_mel_channels=80)))
    model.metadata = {"vocoder": "builtin"}
    assert isinstance(choose_vocoder(model), GriffinLim)
    assert "records vocoder=builtin" in caplog.text


@pytest.mark.parametrize("bad", ["vocos", "", "Griffin-Lim", 3, None])
def test_a_bad_choice_is_refused_naming_the_argument_and_the_choices(tiny, bad):
    with pytest.raises(ValueError, match=r"--vocoder must be one of auto, builtin, griffin-lim or a flowtts vocoder"):
        choose_vocoder(tiny, bad, name="--vocoder")
    with pytest.raises(ValueError, match=r"^vocoder must be one of"):
        check_vocoder_choice(bad)


def test_a_missing_file_a_vocos_directory_beside_another_choice_and_a_bad_record_are_refused(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="vocoder file not found"):
        choose_vocoder(tiny, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="give one vocoder"):
        choose_vocoder(tiny, "builtin", vocos_path=tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        choose_vocoder(tiny, vocos_path=tmp_path)  # auto + a Vocos directory: the Vocos
    odd = build_model("tiny")
    odd.metadata = {"vocoder": "vocos"}
    with pytest.raises(ValueError, match="'vocoder' metadata must be one of 'builtin'"):
        choose_vocoder(odd)
    with pytest.raises(TypeError, match="needs a model"):
        choose_vocoder(object())


def test_griffin_lim_gradient_matches_float64_finite_differences():
    spec = MelSpec(**dataclasses.asdict(SMALL_MEL))
    vocoder = GriffinLim(spec, n_iter=3, nnls_iter=4)
    g = torch.Generator().manual_seed(0)
    mel = (torch.randn(1, SMALL_MEL.n_mel_channels, 5, generator=g, dtype=torch.float64) * 0.5 - 1).requires_grad_()
    weights = torch.randn(4 * SMALL_MEL.hop_length, generator=g, dtype=torch.float64)

    def loss(x):
        wave = vocoder(x)
        assert wave.dtype == torch.float64 and wave.shape == (1, 4 * SMALL_MEL.hop_length)
        return (wave[0] * weights).sum()

    loss(mel).backward()
    assert mel.grad.abs().max() > 0
    eps, numeric = 1e-6, torch.zeros_like(mel)
    with torch.no_grad():
        for i in range(mel.numel()):
            step = torch.zeros_like(mel).view(-1)
            step[i] = eps
            step = step.view_as(mel)
            numeric.view(-1)[i] = (loss(mel + step) - loss(mel - step)) / (2 * eps)
    torch.testing.assert_close(mel.grad, numeric, rtol=1e-5, atol=1e-7)


def test_griffin_lim_in_float32_is_unchanged_by_the_float64_path():
    spec = MelSpec(**dataclasses.asdict(SMALL_MEL))
    mel = torch.randn(1, SMALL_MEL.n_mel_channels, 7, generator=torch.Generator().manual_seed(1)) - 1
    out32 = GriffinLim(spec, n_iter=4)(mel)
    out64 = GriffinLim(spec, n_iter=4)(mel.double())
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-4)
