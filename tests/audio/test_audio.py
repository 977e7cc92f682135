import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from flowtts.audio.io import read_audio, write_audio
from flowtts.audio.resample import resample
from flowtts.audio.vocoders import GriffinLim
from flowtts.model.mel import MelSpec

ASSET = os.path.join(os.path.dirname(__file__), "..", "assets", "birch_canoe_espeak_22k.wav")


def _tone(freq, rate, seconds=1.0):
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("orig, new", [(22050, 24000), (44100, 24000), (24000, 16000), (16000, 24000)])
def test_resample_keeps_a_tone_and_the_length(orig, new):
    y = resample(_tone(440, orig), orig, new)
    assert y.numel() == math.ceil(new * orig / orig)
    ref = _tone(440, new)[: y.numel()]
    assert (y - ref)[300:-300].abs().max() < 2e-3


def test_resample_removes_content_above_the_new_nyquist():
    y = resample(_tone(11000, 24000), 24000, 16000)
    assert y[300:-300].abs().max() < 0.01
    same = _tone(440, 8000)
    assert torch.equal(resample(same, 8000, 8000), same)  # the same rate: the samples untouched


@pytest.mark.parametrize("orig, new", [(22050, 24000), (44100, 24000), (24000, 16000)])
def test_resample_matches_scipys_polyphase_resampler_on_band_limited_noise(orig, new):
    """An independent implementation (scipy's Kaiser-windowed polyphase filter) agrees below both Nyquists."""
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(0)
    noise = np.convolve(rng.standard_normal(orig), signal.firwin(255, 7000, fs=orig), "same")  # under 7 kHz
    g = math.gcd(orig, new)
    ref = signal.resample_poly(noise, new // g, orig // g)
    ours = resample(torch.from_numpy(noise), orig, new).numpy()
    assert ours.shape == ref.shape
    diff = (ours - ref)[300:-300]
    assert np.sqrt((diff**2).mean()) < 0.005 * np.sqrt((ref[300:-300] ** 2).mean())  # measured <= 0.0017


def test_read_audio_downmixes_and_resamples(tmp_path):
    stereo = np.stack([np.sin(np.arange(4410) / 10), np.zeros(4410)], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.flac", stereo, 44100)
    wave, rate = read_audio(tmp_path / "s.flac", 24000)
    assert rate == 24000 and wave.ndim == 1 and wave.numel() == 2400
    assert abs(float(wave.abs().max()) - 0.5) < 0.02  # mean of the two channels


def test_read_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....junk")
    with pytest.raises(ValueError, match="cannot read audio"):
        read_audio(tmp_path / "bad.wav")


def test_write_audio_is_atomic(tmp_path):
    write_audio(tmp_path / "a.wav", torch.zeros(100), 24000)
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]
    with pytest.raises(ValueError, match="unknown audio format .unknownext"):  # refused before writing
        write_audio(tmp_path / "b.unknownext", torch.zeros(100), 24000)
    with pytest.raises(ValueError, match=f"cannot write {tmp_path / 'c.raw'}"):  # fails inside soundfile
        write_audio(tmp_path / "c.raw", torch.zeros(100), 24000)
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]  # no partial or temporary file left


def test_griffin_lim_round_trip_of_real_speech():
    wave, _ = read_audio(ASSET, 24000)
    mel_spec = MelSpec()
    mel = mel_spec(wave[None])
    rebuilt = GriffinLim(mel_spec)(mel)
    assert rebuilt.shape == (1, (mel.shape[-1] - 1) * 256)
    again = mel_spec(rebuilt)
    n = min(mel.shape[-1], again.shape[-1])
    distance = (mel[..., :n] - again[..., :n]).abs().mean().item()
    noise = mel_spec(torch.randn_like(wave)[None] * wave.std())
    baseline = (mel - noise[..., : mel.shape[-1]]).abs().mean().item()
    assert distance < 0.4, distance  # mean |log-mel difference|; measured 0.28
    assert baseline > 10 * distance
    assert torch.equal(GriffinLim(mel_spec)(mel), rebuilt)  # deterministic


def test_filterbank_inversion_is_non_negative_and_consistent():
    mel_spec = MelSpec()
    wave, _ = read_audio(ASSET, 24000)
    mel = mel_spec(wave[None])
    mag = GriffinLim(mel_spec).magnitudes(mel)
    assert (mag >= 0).all()
    projected = (mel_spec.filterbank @ mag).clamp(min=1e-5).log()
    assert (projected - mel).abs().mean() < 0.01


def test_vocos_needs_a_local_directory_and_its_extra(tmp_path):
    import importlib.util

    from flowtts.audio.vocoders import choose_vocoder

    def load_vocoder(spec, path):
        return choose_vocoder(spec, vocos_path=path)

    assert isinstance(choose_vocoder(MelSpec()), GriffinLim)
    with pytest.raises(FileNotFoundError, match="Vocos directory not found"):
        load_vocoder(MelSpec(), tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        load_vocoder(MelSpec(), tmp_path)
    (tmp_path / "config.yaml").write_text("feature_extractor: {}\n")
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        load_vocoder(MelSpec(), tmp_path)
    if importlib.util.find_spec("vocos") is None:
        (tmp_path / "model.safetensors").write_bytes(b"")
        with pytest.raises(ImportError, match=r"flowtts\[vocos\]"):
            load_vocoder(MelSpec(), tmp_path)
