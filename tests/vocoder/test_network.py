"""The built-in vocoder's network: synthesis conventions, the magnitude prior, gradients, bad input."""

from __future__ import annotations

import pytest
import torch

from flowtts.config import MelConfig
from flowtts.model.mel import MelSpec
from flowtts.vocoder.network import MelVocoder, VocoderConfig
from vocoder.helpers import SMALL_MEL, small_vocoder


def test_synthesis_inverts_the_front_ends_stft():
    """iSTFT(STFT(x)) = x: a spectrum taken with the mel front end's own STFT comes back as the wave."""
    vocoder = MelVocoder()
    mel = vocoder.config.mel
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(2, 40 * mel.hop_length, generator=g) * 0.1
    spec = torch.stft(
        wave,
        mel.n_fft,
        mel.hop_length,
        mel.win_length,
        torch.hann_window(mel.win_length),
        center=True,
        return_complex=True,
    )
    out = vocoder.synthesize(spec.abs().clamp(min=1e-12).log(), spec.angle())
    assert out.shape == wave.shape  # (n - 1) * hop samples for n = nw / hop + 1 frames
    assert torch.allclose(out, wave, atol=1e-5)


def test_the_prior_gives_magnitudes_whose_mel_is_the_input():
    """The pseudo-inverse prior is a right inverse of the filterbank (full row rank): mel(prior) = mel."""
    vocoder = MelVocoder()
    wave = torch.randn(1, 30 * 256, generator=torch.Generator().manual_seed(1)) * 0.2
    log_mel = MelSpec()(wave)
    linear = vocoder.inverse @ log_mel.exp()
    assert (linear > 1e-5).float().mean() > 0.5  # the clamp is not what the check below rests on
    rebuilt = torch.log(MelSpec().filterbank @ linear)
    assert torch.allclose(rebuilt, log_mel, atol=1e-3)


def test_output_length_follows_the_mel_frames():
    vocoder = MelVocoder().eval()
    with torch.no_grad():
        wave = vocoder(torch.randn(3, 100, 17) - 4)
    assert wave.shape == (3, 16 * 256)
    assert torch.isfinite(wave).all()


def test_gradient_matches_float64_finite_differences():
    vocoder = small_vocoder().double()
    log_mel = (torch.randn(1, 12, 6, dtype=torch.float64) - 2).requires_grad_(True)
    weights = torch.randn(1, 5 * 16, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m: (vocoder(m) * weights).sum(), (log_mel,), eps=1e-6, atol=1e-6)


def test_parameter_gradients_match_finite_differences():
    vocoder = small_vocoder(seed=3).double()
    log_mel = torch.randn(1, 12, 5, dtype=torch.float64) - 2
    weights = torch.randn(1, 4 * 16, dtype=torch.float64)
    names = ("head.weight", "blocks.0.pw1.weight", "embed.weight")
    params = dict(vocoder.named_parameters())

    def loss(*values):
        out = torch.func.functional_call(vocoder, {**params, **dict(zip(names, values))}, (log_mel,))
        return (out * weights).sum()

    start = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(loss, start, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 99, 10), (100,), (1, 100, 1), (1, 1, 100, 4)])
def test_bad_mel_shapes_are_refused_naming_the_expected_shape(shape):
    with pytest.raises(ValueError, match=r"log_mel must have shape \(batch, 100, frames >= 2\)"):
        MelVocoder()(torch.zeros(shape))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dim=0), "dim must be a positive integer"),
        (dict(kernel=4), "kernel must be odd"),
        (dict(mult=0.0), "mult must be > 0"),
        (dict(mel=MelConfig(mel_spec_type="bigvgan")), "vocos-style"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        VocoderConfig(**overrides)


def test_config_round_trips_through_a_dict():
    config = VocoderConfig(mel=SMALL_MEL, dim=8, blocks=2)
    assert VocoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown vocoder config keys"):
        VocoderConfig.from_dict({**config.to_dict(), "width": 3})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64])
def test_mels_of_any_precision_are_vocoded_in_the_weights_precision(dtype):
    vocoder = small_vocoder().eval()
    mel = (torch.randn(1, 12, 6) - 2).to(dtype)
    with torch.no_grad():
        wave = vocoder(mel)
    assert wave.dtype == torch.float32 and wave.shape == (1, 5 * 16)
