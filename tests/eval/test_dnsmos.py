import math
import sys

import pytest
import torch

from flowtts.eval import dnsmos as dnsmos_module
from flowtts.eval.dnsmos import DnsmosScore, dnsmos, prepare_wave


def _tone(rate: int, seconds: float = 0.5, amplitude: float = 0.2) -> torch.Tensor:
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * 440 * t)).float()


def test_prepare_wave_resamples_to_16k_with_peak_0_9():
    out = prepare_wave(_tone(24_000), 24_000)
    assert out.dtype == torch.float32
    assert out.numel() == 8_000
    assert float(out.abs().max()) == pytest.approx(0.9, abs=1e-6)


def test_prepare_wave_keeps_a_16k_wave_and_only_scales_it():
    wave = _tone(16_000)
    out = prepare_wave(wave, 16_000)
    assert torch.allclose(out, wave * (0.9 / float(wave.abs().max())), atol=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="wave"):
        prepare_wave(torch.zeros(2, 10), 16_000)
    with pytest.raises(ValueError, match="silent"):
        prepare_wave(torch.zeros(100), 16_000)
    with pytest.raises(ValueError, match="sample_rate"):
        prepare_wave(_tone(16_000), 0)


def test_missing_speechmos_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechmos", None)
    with pytest.raises(ImportError, match="pip install speechmos onnxruntime"):
        dnsmos(_tone(16_000), 16_000)
    assert not dnsmos_module.dnsmos_available()


def test_scores_come_from_speechmos_on_the_prepared_wave(monkeypatch):
    seen = {}

    def fake_run(sample, sr, return_df=True):
        seen.update(n=sample.size, sr=sr, peak=float(abs(sample).max()), return_df=return_df)
        return {"p808_mos": 3.5, "ovrl_mos": 2.75}

    monkeypatch.setattr(dnsmos_module, "_run_function", lambda: fake_run)
    assert dnsmos(_tone(24_000), 24_000) == DnsmosScore(p808=3.5, ovrl=2.75)
    assert seen == {"n": 8_000, "sr": 16_000, "peak": pytest.approx(0.9, abs=1e-6), "return_df": False}


def test_limit_threads_refuses_a_bad_count():
    with pytest.raises(ValueError, match="threads"):
        dnsmos_module.limit_threads(0)
