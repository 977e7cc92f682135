import json

import pytest
import torch

import flowtts
from flowtts.sampling.grids import make_grid
from flowtts.sampling.recipe import SamplingRecipe


def test_defaults_are_f5_tts_inference_and_turn_into_sample_arguments():
    recipe = SamplingRecipe()
    assert recipe.sample_kwargs() == dict(steps=32, cfg_strength=2.0, sway_sampling_coef=-1.0, use_epss=True)
    assert torch.equal(recipe.times(), make_grid(32, use_epss=True, sway_coef=-1.0))
    assert recipe.nfe() == 64 and SamplingRecipe(steps=4, cfg_strength=0.0).nfe() == 4


def test_an_explicit_grid_replaces_steps_epss_and_sway():
    recipe = SamplingRecipe(steps=9, cfg_strength=0.0, t_grid=[0, 0.1, 0.5, 1])
    assert (recipe.steps, recipe.sway_sampling_coef, recipe.use_epss) == (3, None, False)
    assert recipe.sample_kwargs() == dict(steps=3, cfg_strength=0.0, sway_sampling_coef=None, t_grid=(0, 0.1, 0.5, 1))
    assert recipe.times().tolist() == pytest.approx([0, 0.1, 0.5, 1])
    # A step count or sway given later drops the grid; guidance alone keeps it.
    assert recipe.with_overrides(cfg_strength=2.0).t_grid == (0, 0.1, 0.5, 1)
    assert recipe.with_overrides(steps=8).t_grid is None and recipe.with_overrides(steps=8).steps == 8


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(cfg_strength=float("nan")), "cfg_strength must be a finite number"),
        (dict(sway_sampling_coef=-3.0), "sway_sampling_coef must lie in"),
        (dict(t_grid=(0, 0.5, 0.4, 1)), "t_grid must rise strictly"),
        (dict(method="rk4"), "method must be one of"),
    ],
)
def test_bad_fields_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        SamplingRecipe(**bad)


def test_metadata_round_trip_and_students_written_before_the_recipe():
    recipe = SamplingRecipe(steps=4, cfg_strength=0.0, t_grid=(0, 0.02, 0.08, 0.3, 1))
    assert SamplingRecipe.from_metadata(recipe.to_metadata()) == recipe
    assert SamplingRecipe.from_metadata({}) is None and SamplingRecipe.from_metadata(None) is None
    legacy = {
        "distill_config": json.dumps(
            {
                "student_steps": 4,
                "student_cfg": 0.0,
                "student_grid": "sway",
                "student_sway": -0.5,
                "student_times": None,
                "teacher_steps": 32,
            }
        )
    }
    expected = SamplingRecipe(steps=4, cfg_strength=0.0, sway_sampling_coef=-0.5, use_epss=False)  # uniform + sway
    assert SamplingRecipe.from_metadata(legacy) == expected


def test_the_shipped_student_samples_with_the_grid_its_file_records():
    student = flowtts.load("builtin:student")
    stored = json.loads(student.metadata["distill_config"])  # written before the recipe existed
    recipe = SamplingRecipe.for_model(student)
    assert recipe.t_grid == tuple(stored["student_times"]) and recipe.cfg_strength == stored["student_cfg"] == 0.0
    cond = torch.randn(1, 40, 100, generator=torch.Generator().manual_seed(0))
    text = ["Hello there, this is the student."]
    via_recipe, _ = student.sample(cond, text, 120, seed=3, **recipe.sample_kwargs())
    direct, _ = student.sample(
        cond, text, 120, seed=3, steps=4, cfg_strength=0.0, sway_sampling_coef=None, t_grid=stored["student_times"]
    )
    assert torch.equal(via_recipe, direct)
    teacher = SamplingRecipe.for_model(flowtts.load("builtin"))
    assert teacher == SamplingRecipe() and teacher.with_overrides(steps=7).sample_kwargs()["steps"] == 7


def test_named_grids_build_the_recipes_that_name_them():
    plain = SamplingRecipe.on_grid("uniform", 4, 0.0)
    assert plain == SamplingRecipe(steps=4, cfg_strength=0.0, sway_sampling_coef=None, use_epss=False)
    swayed = SamplingRecipe.on_grid("sway", 4, 0.0, sway=-0.5)
    assert (swayed.sway_sampling_coef, swayed.use_epss) == (-0.5, False)
    custom = SamplingRecipe.on_grid("custom", 2, 1.0, times=[0, 0.3, 1])
    assert custom.t_grid == (0.0, 0.3, 1.0) and custom.steps == 2
    for grid in ("uniform", "epss", "sway", "custom"):
        assert SamplingRecipe.on_grid(grid, 2, 0.0, times=(0, 0.3, 1)).grid == grid
    assert SamplingRecipe().grid == "epss+sway"  # F5-TTS's defaults
    with pytest.raises(ValueError, match="the grid must be one of"):
        SamplingRecipe.on_grid("cosine", 4, 0.0)
    with pytest.raises(ValueError, match="custom grid needs its times"):
        SamplingRecipe.on_grid("custom", 4, 0.0)
