import numpy as np
import pytest
import torch

from flowtts.model.mel import MelSpec, mel_filterbank
from upstream import load_upstream, needs_upstream

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


def test_bigvgan_mel_has_upstreams_frame_count_and_is_a_real_spectrogram():
    wave = _speechlike(seed=1)[None]
    mel = MelSpec(mel_spec_type="bigvgan")(wave)
    assert mel.shape == (1, 100, 24000 // 256)  # uncentred: (n + (n_fft - hop) - n_fft) // hop + 1
    assert mel.std() > 1.0


@needs_upstream(load_upstream() is not None)
def test_bigvgan_mel_matches_upstream():
    from f5_tts.model.modules import get_bigvgan_mel_spectrogram

    wave = _speechlike(seed=1)[None]
    ref = get_bigvgan_mel_spectrogram(wave)
    mel = MelSpec(mel_spec_type="bigvgan")(wave)
    assert mel.shape == ref.shape
    assert (mel - ref).abs().max() < 1e-4


def test_unknown_mel_type_and_bad_shape_are_rejected():
    with pytest.raises(ValueError, match="mel_spec_type"):
        MelSpec(mel_spec_type="hifigan")
    with pytest.raises(ValueError, match="wav"):
        MelSpec()(torch.zeros(2, 3, 1000))


def test_mel_buffers_are_not_in_the_state_dict():
    assert MelSpec().state_dict() == {}


def _reference_log_mel(wave: np.ndarray, sr: int, n_fft: int, hop: int, win: int, n_mels: int) -> np.ndarray:
    """What ``torchaudio.transforms.MelSpectrogram(power=1, center=True, norm=None)`` then ``log(clamp(1e-5))``
    computes, from its definition in float64 numpy: reflect padding of n_fft // 2 on each side, a periodic
    Hann window of ``win`` samples centred in ``n_fft``, one real DFT per hop, magnitudes, and librosa's
    HTK filterbank without area normalisation (``(n_mels, frames)``)."""
    x = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = 1 + (x.size - n_fft) // hop
    spectrum = np.stack([np.abs(np.fft.rfft(x[k * hop : k * hop + n_fft] * window)) for k in range(frames)], axis=1)
    fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, htk=True, norm=None, dtype=np.float64)
    return np.log(np.maximum(fb @ spectrum, 1e-5))


@pytest.mark.parametrize(
    "sr, n_fft, hop, win, n_mels",
    [(24000, 1024, 256, 1024, 100), (16000, 512, 160, 400, 80)],  # F5-TTS's, and a window shorter than the FFT
)
def test_vocos_mel_matches_a_float64_numpy_dft_reference(sr, n_fft, hop, win, n_mels):
    """Replaces a comparison with torchaudio (which does not import here): the same definition, computed
    independently of torch.stft and of flowtts's filterbank."""
    wave = _speechlike(n=sr, sr=sr, seed=2)
    spec = MelSpec(n_fft=n_fft, hop_length=hop, win_length=win, n_mel_channels=n_mels, target_sample_rate=sr)
    mel = spec(wave[None])[0].double().numpy()
    ref = _reference_log_mel(wave.numpy(), sr, n_fft, hop, win, n_mels)
    assert mel.shape == ref.shape == (n_mels, sr // hop + 1)
    assert np.abs(mel - ref).max() < 1e-4  # measured 2e-5 (float32 STFT)
    assert (ref > np.log(1e-5) + 1).mean() > 0.9  # nearly every bin above the floor: the comparison has content
