import pytest
import torch

from flowtts.eval.variety import mel_distance, seed_spread, variety


def test_seed_spread_of_a_known_spread():
    base = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    # Seeds at base - 1, base, base + 1: sample standard deviation 1 in every bin.
    mels = [base - 1, base, base + 1]
    assert seed_spread(mels) == pytest.approx(1.0, rel=1e-6)


def test_variety_averages_sentences():
    a = [torch.zeros(2, 3), torch.full((2, 3), 2.0)]  # std sqrt(2)
    b = [torch.zeros(2, 5), torch.zeros(2, 5)]  # std 0
    assert variety([a, b]) == pytest.approx(2**0.5 / 2, rel=1e-12)


def test_identical_seeds_have_no_variety():
    mel = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    assert seed_spread([mel, mel.clone(), mel.clone()]) == 0.0


def test_mel_distance_is_the_mean_squared_difference():
    a = torch.zeros(2, 2)
    b = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    assert mel_distance(a, b) == pytest.approx((1 + 4 + 0 + 1) / 4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mels"):
        seed_spread([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="mels"):
        seed_spread([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="mels_per_sentence"):
        variety([])
    with pytest.raises(ValueError, match="same shape"):
        mel_distance(torch.zeros(2, 3), torch.zeros(2, 4))
