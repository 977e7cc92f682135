import math

import pytest
import torch

from flowtts.eval.frechet import Gaussian, fit_gaussian, frame_features, frechet_distance, mel_frechet


def _gaussian(mean, cov):
    mean = torch.tensor(mean, dtype=torch.float64)
    return Gaussian(mean=mean, cov=torch.tensor(cov, dtype=torch.float64), count=100)


def test_identical_sets_are_at_distance_zero():
    g = torch.Generator().manual_seed(0)
    mels = [torch.randn(6, 40, generator=g) for _ in range(3)]
    assert mel_frechet(mels, mels) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_gaussians_match_the_closed_form():
    s1, s2 = [1.0, 4.0, 0.25], [9.0, 1.0, 0.25]
    a = _gaussian([0.0, 1.0, 2.0], torch.diag(torch.tensor(s1)).tolist())
    b = _gaussian([1.0, -1.0, 2.0], torch.diag(torch.tensor(s2)).tolist())
    expected = (1 + 4 + 0) + sum(x + y - 2 * math.sqrt(x * y) for x, y in zip(s1, s2))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(5 + 4 + 1)


def test_full_covariances_match_the_commuting_closed_form():
    # Covariances sharing eigenvectors (a rotation): tr sqrt(S1 S2) = sum sqrt(l1 l2).
    c, s = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov1 = rot @ torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)) @ rot.t()
    cov2 = rot @ torch.diag(torch.tensor([1.0, 9.0], dtype=torch.float64)) @ rot.t()
    a = Gaussian(mean=torch.zeros(2, dtype=torch.float64), cov=cov1, count=10)
    b = Gaussian(mean=torch.tensor([3.0, 4.0], dtype=torch.float64), cov=cov2, count=10)
    expected = 25 + (4 + 1 + 1 + 9) - 2 * (2 + 3)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)


def test_frame_features_append_central_deltas():
    mel = torch.tensor([[0.0, 1.0, 3.0, 6.0]])
    feats = frame_features(mel)
    assert feats.shape == (4, 2)
    assert feats[:, 0].tolist() == [0.0, 1.0, 3.0, 6.0]
    assert feats[:, 1].tolist() == [0.5, 1.5, 2.5, 1.5]


def test_fit_gaussian_pools_sets():
    a = torch.tensor([[0.0], [2.0]])
    b = torch.tensor([[4.0]])
    g = fit_gaussian([a, b])
    assert float(g.mean[0]) == pytest.approx(2.0)
    assert float(g.cov[0, 0]) == pytest.approx(4.0)  # unbiased: (4 + 0 + 4) / 2
    assert g.count == 3


def test_shifted_samples_give_the_squared_shift():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)
    assert frechet_distance(fit_gaussian(x), fit_gaussian(x + shift)) == pytest.approx(5.0, rel=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mel"):
        frame_features(torch.zeros(3))
    with pytest.raises(ValueError, match="two rows"):
        fit_gaussian(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="features"):
        fit_gaussian([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="differ in size"):
        frechet_distance(_gaussian([0.0], [[1.0]]), _gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]))
