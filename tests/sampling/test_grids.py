import math

import pytest
import torch

from flowtts.sampling import grids


def test_uniform_grid_is_float32_and_spans_unit_interval():
    t = grids.uniform(4)
    assert t.dtype == torch.float32
    assert torch.equal(t, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))


@pytest.mark.parametrize("steps", sorted(grids.EPSS_GRIDS))
def test_epss_grids_follow_the_1_32_lattice(steps):
    t = grids.epss(steps)
    assert t.numel() == steps + 1
    assert t[0] == 0 and t[-1] == 1
    assert torch.all(t[1:] > t[:-1])
    assert torch.allclose(t * 32, (t * 32).round())


def test_epss_falls_back_to_uniform():
    assert torch.equal(grids.epss(8), grids.uniform(8))
    assert torch.equal(grids.epss(7), torch.tensor([0, 2, 4, 6, 8, 16, 24, 32]) / 32)


def test_sway_formula_and_endpoints():
    t = grids.uniform(10)
    s = grids.sway(t, -1.0)
    expected = [x - (math.cos(math.pi / 2 * x) - 1 + x) for x in t.tolist()]
    assert torch.allclose(s, torch.tensor(expected), atol=1e-6)
    assert s[0] == 0 and abs(float(s[-1]) - 1) < 1e-6
    assert torch.all(s[1:] > s[:-1])
    assert grids.sway(t, None) is t


def test_make_grid_gives_known_times():
    # EPSS at 7 steps is F5-TTS's lattice 0, 2, 4, 6, 8, 16, 24, 32 (/32); uniform without EPSS.
    assert grids.make_grid(7, use_epss=True).tolist() == [k / 32 for k in (0, 2, 4, 6, 8, 16, 24, 32)]
    assert grids.make_grid(4, use_epss=False).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # Sway -1 maps t = 1/2 to 1/2 - (cos(pi/4) - 1/2) = 1 - sqrt(2)/2 and keeps both ends.
    swayed = grids.make_grid(2, use_epss=False, sway_coef=-1.0)
    assert swayed[0] == 0 and swayed[2] == 1 and abs(float(swayed[1]) - (1 - 2**0.5 / 2)) < 1e-6


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_step_counts_are_rejected(bad):
    with pytest.raises(ValueError, match="steps"):
        grids.uniform(bad)
