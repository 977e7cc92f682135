import importlib.util

import numpy as np
import pytest
import torch

from flowtts.model.mel import MelSpec, mel_filterbank

librosa = pytest.importorskip("librosa")


def _speechlike(n=24000, sr=24000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t)
    wave = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 12))
    wave = wave * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(n)
    return torch.tensor(0.3 * wave / np.abs(wave).max(), dtype=torch.float32)


def test_htk_filterbank_matches_librosa_htk_without_norm():
    ours = mel_filterbank(24000, 1024, 100, scale="htk")
    ref = librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, htk=True, norm=None)
    assert ours.shape == (100, 513)
    assert np.abs(ours.numpy() - ref).max() < 2e-5


def test_slaney_filterbank_matches_librosa_default():
    ours = mel_filterbank(24000, 1024, 100, scale="slaney")
    ref = librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100)
    assert np.abs(ours.numpy() - ref).max() < 1e-7


def test_vocos_mel_equals_reference_stft_pipeline():
    wave = _speechlike()[None]
    mel = MelSpec()(wave)
    assert mel.shape == (1, 100, 24000 // 256 + 1)
    spec = torch.stft(wave, 1024, 256, 1024, torch.hann_window(1024), center=True, return_complex=True).abs()
    fb = torch.tensor(librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, htk=True, norm=None))
    ref = (fb @ spec).clamp(min=1e-5).log()
    assert (mel - ref).abs().max() < 1e-3
    assert mel.std() > 1.0  # a real spectrogram, not a constant floor


def test_bigvgan_mel_matches_upstream_when_installed():
    wave = _speechlike(seed=1)[None]
    mel = MelSpec(mel_spec_type="bigvgan")(wave)
    assert mel.shape == (1, 100, 24000 // 256)
    from upstream import load_upstream

    if load_upstream() is None:
        pytest.skip("f5-tts not installed")
    from f5_tts.model.modules import get_bigvgan_mel_spectrogram

    ref = get_bigvgan_mel_spectrogram(wave)
    assert (mel - ref).abs().max() < 1e-4


def test_unknown_mel_type_and_bad_shape_are_rejected():
    with pytest.raises(ValueError, match="mel_spec_type"):
        MelSpec(mel_spec_type="hifigan")
    with pytest.raises(ValueError, match="wav"):
        MelSpec()(torch.zeros(2, 3, 1000))


def test_mel_buffers_are_not_in_the_state_dict():
    assert MelSpec().state_dict() == {}


@pytest.mark.skipif(importlib.util.find_spec("torchaudio") is None, reason="torchaudio not importable")
def test_vocos_mel_matches_torchaudio():  # pragma: no cover - torchaudio does not import here
    import torchaudio

    wave = _speechlike()[None]
    ta = torchaudio.transforms.MelSpectrogram(24000, 1024, 1024, 256, n_mels=100, power=1, center=True, norm=None)
    assert (MelSpec()(wave) - ta(wave).clamp(min=1e-5).log()).abs().max() < 1e-3
