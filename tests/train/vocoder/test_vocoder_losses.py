"""Vocoder training losses: known values, invariances, zero at the target."""

from __future__ import annotations

import math

import pytest
import torch

from flowtts.train.vocoder import losses
from flowtts.train.vocoder.discriminators import (
    Discriminators,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)


@pytest.mark.parametrize(
    "x, expected",
    [
        (0.0, 0.0),
        (0.5, 0.5),
        (-0.5, 0.5),
        (2 * math.pi, 0.0),
        (2 * math.pi + 0.3, 0.3),
        (math.pi - 0.1, math.pi - 0.1),
        (-4 * math.pi - 0.2, 0.2),
    ],
)
def test_anti_wrap_is_the_distance_to_the_nearest_whole_turn(x, expected):
    assert float(losses.anti_wrap(torch.tensor(x, dtype=torch.float64))) == pytest.approx(expected, abs=1e-12)


def test_phase_losses_vanish_at_the_target_and_ignore_whole_turns():
    g = torch.Generator().manual_seed(0)
    phase = torch.rand(2, 9, 7, generator=g) * 6 - 3
    magnitude = torch.rand(2, 9, 7, generator=g)
    turns = torch.randint(-3, 4, phase.shape, generator=g).double() * 2 * math.pi
    terms = losses.phase_losses(phase.double() + turns, phase.double(), magnitude.double())
    assert all(float(v) < 1e-9 for v in terms.values())
    shifted = losses.phase_losses(phase + 0.5, phase, magnitude)
    assert float(shifted["ip"]) == pytest.approx(0.5, rel=1e-5)  # weights average to 1
    assert float(shifted["gd"]) < 1e-5 and float(shifted["iaf"]) < 1e-5  # a constant offset has no delay


def test_phase_losses_weight_loud_bins():
    phase, target = torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)
    phase[0, 0] = 1.0  # wrong phase only in bin 0
    quiet_wrong = losses.phase_losses(phase, target, torch.tensor([[[0.01] * 3, [1.0] * 3]]))["ip"]
    loud_wrong = losses.phase_losses(phase, target, torch.tensor([[[1.0] * 3, [0.01] * 3]]))["ip"]
    assert float(loud_wrong) > 50 * float(quiet_wrong)


def test_stft_losses_are_zero_for_the_same_wave_and_grow_with_noise():
    g = torch.Generator().manual_seed(1)
    wave = torch.randn(2, 4096, generator=g) * 0.1
    assert float(losses.multi_resolution_stft_loss(wave, wave)) < 1e-6
    small = losses.multi_resolution_stft_loss(wave + 0.001 * torch.randn(2, 4096, generator=g), wave)
    large = losses.multi_resolution_stft_loss(wave + 0.05 * torch.randn(2, 4096, generator=g), wave)
    assert 0 < float(small) < float(large)


def test_stft_resolutions_surround_the_front_end():
    assert losses.stft_resolutions(1024, 256) == ((512, 128), (1024, 256), (2048, 512))
    assert losses.stft_resolutions(64, 16) == ((32, 8), (64, 16), (128, 32))


def test_hinge_losses_match_hand_values():
    real = [(torch.tensor([[2.0, 0.5]]), []), (torch.tensor([[-1.0]]), [])]
    fake = [(torch.tensor([[-2.0, 0.0]]), []), (torch.tensor([[1.0]]), [])]
    # sub 0: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake relu(1-2)=0, relu(1+0)=1 -> 0.5; total 0.75
    # sub 1: relu(1+1)=2; fake relu(1+1)=2; total 4.  mean 2.375
    assert float(discriminator_loss(real, fake)) == pytest.approx(2.375)
    # generator: sub 0 relu(1+2)=3, relu(1-0)=1 -> 2; sub 1 relu(1-1)=0 -> 0; mean 1
    assert float(generator_loss(fake)) == pytest.approx(1.0)


def test_feature_matching_is_zero_for_the_same_wave_and_sends_no_gradient_to_the_real_side():
    torch.manual_seed(0)
    net = Discriminators(resolutions=((64, 16), (128, 32)))
    wave = torch.randn(2, 2048) * 0.1
    assert float(feature_matching_loss(net(wave), net(wave))) == 0.0
    real = wave.clone().requires_grad_(True)
    fake = (wave + 0.01 * torch.randn(2, 2048)).requires_grad_(True)
    feature_matching_loss(net(real), net(fake)).backward()
    assert real.grad is None or float(real.grad.abs().max()) == 0.0
    assert float(fake.grad.abs().max()) > 0
