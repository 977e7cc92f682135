"""``distill_fewstep``: each method's run, its files and recorded recipe, exact resume, progressive rounds."""

import copy
import json
import os

import pytest
import torch

from flowtts.checkpoints.loader import read_metadata
from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train.data import MelDataset
from flowtts.train.fewstep.adversarial import AdversarialSettings
from flowtts.train.fewstep.consistency import ConsistencySettings
from flowtts.train.fewstep.dmd import DMDSettings
from flowtts.train.fewstep.progressive import ProgressiveSettings
from flowtts.train.fewstep.run import FEWSTEP_LOOP, FewStepConfig, distill_fewstep
from flowtts.train.prompts import fixed_prompts, generated_distance, sample_with
from train.helpers import Killed, kill_at, prepared_corpus, random_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("fewstep_run")), n=4)


SETTINGS = {
    "progressive": ProgressiveSettings(start_steps=4, end_steps=1, steps_per_round=2, teacher_cfg=2.0),
    "consistency": ConsistencySettings(
        intervals=8, skip=2, teacher_substeps=2, teacher_cfg=2.0, target_decay=0.5, sample_steps=2, sway_coef=-1.0
    ),
    "adversarial": AdversarialSettings(student_steps=2, feature_layers=(-1,), read_mel=True, teacher_cfg=2.0),
    "dmd": DMDSettings(student_steps=2, sampler="ode", teacher_cfg=2.0, fake_updates_per_generator=2),
}
# (steps, sway) each method's student records
RECIPES = {"progressive": (1, None), "consistency": (2, -1.0), "adversarial": (2, None), "dmd": (2, None)}


def _config(method, steps=4, save_every=2, **kw):
    loop = FEWSTEP_LOOP.with_overrides(steps=steps, lr=3e-3, warmup=1, ema_decay=0.5, save_every=save_every)
    return FewStepConfig(method, SETTINGS[method], loop=loop, batch_size=2, seed=1, **kw)


def _run(corpus, out, config, **kw):
    teacher = random_model(corpus)
    student = copy.deepcopy(teacher)
    summary = distill_fewstep(teacher, student, MelDataset(corpus), config, str(out), progress=False, **kw)
    return student, summary


@pytest.mark.parametrize("method", list(SETTINGS))
def test_each_method_trains_and_records_its_students_recipe(corpus, tmp_path, method):
    config = _config(method)
    student, summary = _run(corpus, tmp_path, config)
    assert summary["step"] == 4 and summary["finished"] and summary["loss"] == summary["loss"]  # not NaN
    start = random_model(corpus).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in student.state_dict().items())  # it trained
    files = set(os.listdir(tmp_path))
    assert {"last.pt", "student.safetensors", "fewstep_log.csv"} <= files
    metadata = read_metadata(str(tmp_path / "student.safetensors"))
    recipe = SamplingRecipe.from_metadata(metadata)
    steps, sway = RECIPES[method]
    assert (recipe.steps, recipe.cfg_strength, recipe.sway_sampling_coef) == (steps, 0.0, sway)
    assert not recipe.use_epss and recipe.t_grid is None
    recorded = json.loads(metadata["fewstep_config"])
    assert recorded["method"] == method and recorded["settings"]["teacher_cfg"] == 2.0
    assert metadata["trained_with"] == f"flowtts distill --method {method}"
    if method == "progressive":
        assert {"student_2.safetensors", "student_1.safetensors"} <= files
    assert metadata["continue_reference"] == "false"  # the default prompts: unprompted


@pytest.mark.parametrize(("prompts", "expected"), [("unprompted", "false"), ("pair", "true"), ("prefix", None)])
def test_students_record_the_layout_they_learnt(corpus, tmp_path, prompts, expected):
    """A student trained without an audio prompt is sampled without one (and one trained on pairs continues
    a clip); prefix prompts say nothing about it."""
    _run(corpus, tmp_path, _config("progressive", steps=2, prompts=prompts))
    metadata = read_metadata(str(tmp_path / "student.safetensors"))
    assert metadata.get("continue_reference") == expected


def check_resume_is_exact(corpus, tmp_path, config, kill: int):
    """A run killed after step ``kill`` and resumed ends with the same student as a run straight through."""
    reference, _ = _run(corpus, tmp_path / "a", config)
    with pytest.raises(Killed):
        _run(corpus, tmp_path / "b", config, on_step=kill_at(kill))
    assert os.path.exists(tmp_path / "b" / "last.pt")
    resumed, summary = _run(corpus, tmp_path / "b", config)
    assert summary["step"] == config.loop.steps
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for name in ("student.safetensors",):
        a = read_metadata(str(tmp_path / "a" / name))
        b = read_metadata(str(tmp_path / "b" / name))
        assert a["sampling_recipe"] == b["sampling_recipe"]


@pytest.mark.parametrize("method", ["consistency", "dmd", "adversarial"])
def test_methods_with_a_companion_resume_exactly(corpus, tmp_path, method):
    check_resume_is_exact(corpus, tmp_path, _config(method, steps=4, save_every=2), kill=3)


def test_progressive_resumes_exactly_across_a_round_boundary(corpus, tmp_path):
    # rounds (4 -> 2), (2 -> 1) of 2 steps: the checkpoint at step 2 ends round 0, killed inside round 1
    config = _config("progressive", save_every=2)
    check_resume_is_exact(corpus, tmp_path, config, kill=3)
    from flowtts.checkpoints.loader import load

    for steps, step in ((2, 2), (1, 4)):
        model = load(str(tmp_path / "b" / f"student_{steps}.safetensors"))
        assert SamplingRecipe.from_metadata(model.metadata).steps == steps
        assert model.metadata["step"] == str(step)
        reference = load(str(tmp_path / "a" / f"student_{steps}.safetensors"))
        for k, v in reference.state_dict().items():
            assert torch.equal(v, model.state_dict()[k]), k


def test_progressive_rounds_teach_from_the_previous_rounds_student(corpus, tmp_path, monkeypatch):
    """Round 1's teacher is the file round 0 wrote, not the guided teacher."""
    from flowtts.train.fewstep import tts

    teachers = []
    original = tts.progressive_step

    def spy(student, teacher, batch, settings, round_index, g):
        teachers.append((round_index, {k: v.clone() for k, v in teacher.state_dict().items()}))
        return original(student, teacher, batch, settings, round_index, g)

    monkeypatch.setattr(tts, "progressive_step", spy)
    _run(corpus, tmp_path, _config("progressive", save_every=10))
    assert [r for r, _ in teachers] == [0, 0, 1, 1]
    from flowtts.checkpoints.loader import load

    round0 = load(str(tmp_path / "student_2.safetensors")).state_dict()
    guided = random_model(corpus).state_dict()
    assert all(torch.equal(teachers[0][1][k], guided[k]) for k in guided)
    assert all(torch.equal(teachers[2][1][k], round0[k]) for k in round0)
    assert any(not torch.equal(round0[k], guided[k]) for k in guided)


def _one_step_distance(teacher, student, prompts):
    grid = dict(cache=True, sway_sampling_coef=None, use_epss=False)
    target = sample_with(teacher, prompts, steps=2, cfg_strength=2.0, **grid)
    out = sample_with(student, prompts, steps=1, cfg_strength=0.0, **grid)
    return generated_distance(out, target, prompts)


def test_progressive_distillation_brings_one_step_closer_to_two_guided_steps(corpus, tmp_path):
    ds = MelDataset(corpus)
    teacher = random_model(corpus)
    student = copy.deepcopy(teacher)
    settings = ProgressiveSettings(start_steps=2, end_steps=1, steps_per_round=8, teacher_cfg=2.0)
    loop = FEWSTEP_LOOP.with_overrides(lr=3e-3, warmup=2, ema_decay=0.5, save_every=100)
    config = FewStepConfig("progressive", settings, loop=loop, batch_size=2, seed=2)
    prompts = fixed_prompts(ds, list(range(len(ds))), "unprompted", teacher.num_channels, config, seed=9)
    before = _one_step_distance(teacher, student, prompts)
    distill_fewstep(teacher, student, ds, config, str(tmp_path), progress=False)
    after = _one_step_distance(teacher, student, prompts)
    assert after < 0.6 * before, (before, after)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        FewStepConfig("trajectory")
    with pytest.raises(ValueError, match="settings of method 'dmd' must be DMDSettings"):
        FewStepConfig("dmd", ProgressiveSettings())
    assert FewStepConfig("dmd").settings.sampler == "ode"  # the default settings are ones it can run
    with pytest.raises(ValueError, match="sampler='ode'"):
        FewStepConfig("dmd", DMDSettings(sampler="renoise"))
    with pytest.raises(ValueError, match="sampler='ode'"):
        FewStepConfig("dmd", DMDSettings(sampler="ode", backward_simulation=False))
    with pytest.raises(ValueError, match="batch_size"):
        FewStepConfig("progressive", batch_size=0)
    with pytest.raises(ValueError, match="prompts"):
        FewStepConfig("progressive", prompts="whole")
    with pytest.raises(ValueError, match="adversarial_weight"):
        FewStepConfig("dmd", DMDSettings(sampler="ode", adversarial_weight=0.5))
    # a progressive run's length is its rounds
    assert FewStepConfig("progressive", SETTINGS["progressive"]).loop.steps == 4


DDP_SCRIPT = """
import copy, sys, torch
sys.path.insert(0, {tests!r})
import torch.distributed as dist
from flowtts.train.data import MelDataset
from flowtts.train.fewstep import run
from flowtts.train.fewstep.dmd import DMDSettings
from flowtts.train.loop import LoopSettings
from train.helpers import random_model
methods = []
init = run._Method.__init__
def keep(self, *args):
    init(self, *args)
    methods.append(self)
run._Method.__init__ = keep
teacher = random_model({corpus!r})
student = copy.deepcopy(teacher)
config = {config!r}
settings, loop = DMDSettings(**config["settings"]), LoopSettings(**config["loop"])
config = run.FewStepConfig("dmd", settings, loop=loop, batch_size=3, seed=1)
run.distill_fewstep(teacher, student, MelDataset({corpus!r}), config, {out!r}, progress=False)
rank = dist.get_rank() if dist.is_initialized() else 0
params = {{"student." + k: v for k, v in student.state_dict().items()}}
params.update({{"fake." + k: v for k, v in methods[0].fake.state_dict().items()}})
torch.save(params, {out!r} + f"/params{{rank}}.pt")
"""


def test_two_process_dmd_keeps_ranks_identical(corpus, tmp_path):
    import dataclasses

    from train.helpers import run_two_ranks

    loop = FEWSTEP_LOOP.with_overrides(steps=2, lr=3e-3, warmup=1, save_every=2)
    settings = dict(student_steps=2, sampler="ode", teacher_cfg=2.0, fake_updates_per_generator=2)
    a, b = run_two_ranks(DDP_SCRIPT, corpus, tmp_path, {"settings": settings, "loop": dataclasses.asdict(loop)})
    start = random_model(corpus).state_dict()
    for part in ("student.", "fake."):
        assert any(not torch.equal(a[part + k], start[k]) for k in start), part  # it trained
    for k in a:
        assert torch.equal(a[k], b[k]), k
