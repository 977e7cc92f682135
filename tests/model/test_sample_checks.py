"""Bad input to ``sample()`` is refused with a TypeError/ValueError naming the argument, before any state changes."""

import math

import pytest
import torch

from conftest import make_tiny, tiny_text
from flowtts.sampling.grids import SWAY_RANGE, make_grid, sway


@pytest.fixture(scope="module")
def model():
    return make_tiny()


def _call(model, **overrides):
    kwargs = dict(cond=torch.zeros(1, 5, 12), text=tiny_text(1), duration=12, steps=2, seed=0)
    kwargs.update(overrides)
    return model.sample(kwargs.pop("cond"), kwargs.pop("text"), kwargs.pop("duration"), **kwargs)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(text=[]), ValueError, "text is an empty list"),
        (dict(text=[None]), TypeError, r"text\[0\] must be a string"),
        (dict(text=[123]), TypeError, r"text\[0\] must be a string"),
        (dict(cond=torch.zeros(0, 5, 12), text=torch.zeros(0, 3, dtype=torch.long)), ValueError, "batch of 0"),
        (dict(cond=torch.zeros(1, 7)), ValueError, "the mel front end needs at least 129"),
        (dict(cond=torch.zeros(1, 0)), ValueError, "no frames"),
        (dict(text=tiny_text(1).to(torch.int8)), TypeError, "text ids must be int64, int32 or int16"),
        (dict(text=tiny_text(1).to(torch.uint8)), TypeError, "text ids must be int64, int32 or int16"),
        (dict(noise=torch.full((1, 12, 12), math.nan)), ValueError, "noise contains NaN"),
        (dict(noise=torch.full((1, 12, 12), math.inf)), ValueError, "noise contains NaN or Inf"),
        (dict(sway_sampling_coef=-2.0), ValueError, "sway_sampling_coef must lie in"),
        (dict(sway_sampling_coef=1e6), ValueError, "sway_sampling_coef must lie in"),
        (dict(steps="4"), ValueError, "steps must be an integer"),
        (dict(cfg_strength=math.nan), ValueError, "cfg_strength must be a finite number"),
        (dict(cfg_strength=1e30), ValueError, "cfg_strength must be a finite number from 0 to 10"),
        (dict(duration=10**7), ValueError, r"duration asks for 65536 frames \(duration=10000000, .* at most 60 s"),
        (dict(duration=torch.tensor([22501])), ValueError, "one sample.. call takes at most 60 s, 22500 frames"),
        (dict(seed=2**70), ValueError, "seed must lie in"),
        (dict(seed=[1, 2]), ValueError, "seed must be None, an int, or a sequence of 1 ints"),
    ],
)
def test_bad_input_names_the_argument_and_leaves_the_model_alone(model, overrides, error, match):
    model.train()
    with pytest.raises(error, match=match):
        _call(model, **overrides)
    assert model.training  # refused before eval() was called


def test_the_sway_range_is_exactly_where_the_grid_stays_increasing_in_the_unit_interval():
    lo, hi = SWAY_RANGE
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    for coef in (lo, -0.5, 0.0, 1.0, hi):
        grid = sway(t, coef)
        assert float(grid.min()) >= 0 and float(grid.max()) <= 1 + 1e-12
        assert bool((grid[1:] >= grid[:-1]).all()), coef
        assert bool((make_grid(7, sway_coef=coef)[1:] > make_grid(7, sway_coef=coef)[:-1]).all())
    # Just outside either end the map turns back somewhere in [0, 1] (what the range guards against).
    for coef in (lo - 1e-3, hi + 1e-3):
        grid = t + coef * (torch.cos(torch.pi / 2 * t) - 1 + t)
        assert not bool((grid[1:] >= grid[:-1]).all()) or float(grid.min()) < 0
        with pytest.raises(ValueError, match="keeps the time grid increasing"):
            sway(t, coef)


def test_valid_edge_cases_still_sample(model):
    out, _ = _call(model, text=tiny_text(1).to(torch.int32), seed=2**40, sway_sampling_coef=-1.0)
    assert torch.isfinite(out).all()
    out, _ = _call(model, cond=torch.zeros(1, 129))  # the shortest wave the front end reads
    assert torch.isfinite(out).all()


def test_a_call_of_60_seconds_is_the_longest_taken():
    from flowtts.model.sample_checks import MAX_SECONDS, check_frames, frame_limit

    model = make_tiny()  # 24 kHz, hop 64: 375 frames a second
    limit = frame_limit(model.mel_spec)
    assert MAX_SECONDS == 60 and limit == 22500 and frame_limit(object()) == 5625  # F5-TTS's 24 kHz, hop 256
    check_frames(limit, limit, limit)
    with pytest.raises(ValueError, match="at most 60 s, 22500 frames"):
        check_frames(limit + 1, limit, limit + 1)
