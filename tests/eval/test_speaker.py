import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from flowtts.eval import speaker
from flowtts.eval.speaker import EncoderFeatures, SpeakerEncoder, SpeakerSimilarity, window_starts
from flowtts.model.mel import MelSpec
from flowtts.train.prompts import Prompts

ASSETS = os.path.join(os.path.dirname(speaker.__file__), "..", "assets")


def _has_weights() -> bool:
    try:
        speaker.resemblyzer_weights()
    except ImportError:
        return False
    return True


needs_weights = pytest.mark.skipif(not _has_weights(), reason="resemblyzer (its weights) not installed")


def _reference_clip():
    import soundfile as sf

    wav, sr = sf.read(os.path.join(ASSETS, "reference.wav"), dtype="float32")
    return wav, sr


def _encoder_features_librosa(wav, sr):
    """The speaker encoder's own input, computed from audio as resemblyzer does (without its VAD trim)."""
    librosa = pytest.importorskip("librosa")
    wav16 = librosa.resample(wav, orig_sr=sr, target_sr=speaker.ENCODER_RATE)
    wav16 = wav16 * (10 ** (-30 / 20) / np.sqrt(np.mean(wav16**2)))
    mel = librosa.feature.melspectrogram(y=wav16, sr=16000, n_fft=400, hop_length=160, n_mels=40)
    return torch.from_numpy(mel.astype(np.float32).T)


def _log_mel(wav):
    return MelSpec()(torch.from_numpy(wav)[None])[0].T  # (n, 100), vocos-style 24 kHz


def test_windows_follow_the_encoders_partial_slicing():
    # 1.6 s windows every 77 frames; a last window under 75 % filled is dropped unless it is the only one.
    assert window_starts(50) == [0]
    assert window_starts(160) == [0]
    assert window_starts(237) == [0, 77]  # a third window would be 83/160 filled
    assert window_starts(400) == [0, 77, 154, 231]


def test_features_from_the_log_mel_match_the_encoders_features_from_audio():
    wav, sr = _reference_clip()
    true = _encoder_features_librosa(wav, sr)
    ours = EncoderFeatures(MelSpec())(_log_mel(wav))
    assert abs(ours.shape[0] - true.shape[0]) <= 2
    n = min(ours.shape[0], true.shape[0])
    a, b = np.log(true[:n].numpy() + 1e-6).ravel(), np.log(ours[:n].numpy() + 1e-6).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.97
    ratio = ours[:n].mean(0) / true[:n].mean(0)
    assert ((ratio[1:-1] > 0.8) & (ratio[1:-1] < 1.3)).all(), ratio  # no spectral tilt
    # The level the features are scaled to is that of this clip at -30 dBFS.
    assert float(true.mean()) == pytest.approx(speaker.TARGET_MEAN_POWER, rel=0.02)


@needs_weights
def test_embeddings_from_the_log_mel_agree_with_embeddings_from_audio_and_tell_voices_apart():
    wav, sr = _reference_clip()
    encoder = SpeakerEncoder.from_file()
    similarity = SpeakerSimilarity(MelSpec(), encoder)
    from_audio = encoder(_encoder_features_librosa(wav, sr))
    from_mel = similarity.embed(_log_mel(wav))
    assert float(from_audio @ from_mel) > 0.9
    mel = _log_mel(wav)
    half = mel.shape[0] // 2
    same_voice = float(similarity.embed(mel[:half]) @ similarity.embed(mel[half:]))
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed: no second voice")
    import librosa
    import soundfile as sf

    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), "flowtts_test_espeak.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", out, "A different voice reads this sentence."], check=True)
    other, other_sr = sf.read(out, dtype="float32")
    other = librosa.resample(other, orig_sr=other_sr, target_sr=24000)
    other_voice = float(similarity.embed(mel) @ similarity.embed(_log_mel(other)))
    assert same_voice > other_voice + 0.15, (same_voice, other_voice)


def test_similarity_is_per_utterance_and_its_gradient_matches_finite_differences():
    torch.manual_seed(0)
    mel_spec = MelSpec(n_mel_channels=100)
    similarity = SpeakerSimilarity(mel_spec, SpeakerEncoder()).double()
    prompts = Prompts(
        cond=torch.zeros(2, 6, 100),
        lens=torch.tensor([5, 6]),
        texts=["a", "b"],
        durations=torch.tensor([12, 10]),
        noise=torch.zeros(2, 12, 100),
    )
    mel = (torch.randn(2, 12, 100, dtype=torch.float64) - 2).requires_grad_(True)
    got = similarity(mel, prompts)
    for b in range(2):
        k, n = int(prompts.lens[b]), int(prompts.durations[b])
        expected = similarity.embed(mel[b, :k]) @ similarity.embed(mel[b, k:n])
        torch.testing.assert_close(got[b], expected)
    # Directional derivatives against central differences in float64, along random directions.
    (grad,) = torch.autograd.grad(got.sum(), mel)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = torch.randn(mel.shape, generator=g, dtype=torch.float64)
        eps = 1e-5
        with torch.no_grad():
            plus = similarity(mel + eps * direction, prompts).sum()
            minus = similarity(mel - eps * direction, prompts).sum()
        numeric = float((plus - minus) / (2 * eps))
        assert float((grad * direction).sum()) == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_bad_inputs_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="16000 Hz"):
        EncoderFeatures(MelSpec(target_sample_rate=8000, n_fft=256, hop_length=64, win_length=256))
    with pytest.raises(ValueError, match=r"shape \(n, 100\)"):
        EncoderFeatures(MelSpec())(torch.zeros(10, 80))
    with pytest.raises(ValueError, match=r"shape \(n, 40\)"):
        SpeakerEncoder()(torch.zeros(3, 10, 40))
    monkeypatch.setattr(speaker.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps resemblyzer"):
        speaker.resemblyzer_weights()
