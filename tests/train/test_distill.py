import copy
import dataclasses
import json
import os

import pytest
import torch

from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train.data import MelDataset
from flowtts.train.distill import distill
from flowtts.train.distill_config import DISTILL_LOOP, DistillConfig, student_recipe
from flowtts.train.prompts import draw_kind, draw_prompts, sample_with
from train import helpers
from train.helpers import Killed, kill_at, prepared_corpus, random_model, split_loop


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("dcorpus")))


def _teacher(corpus):
    return random_model(corpus)


def _config(**kw):
    base = dict(
        student=student_recipe(2),
        teacher=SamplingRecipe(steps=8),
        steps=30,
        batch_size=3,
        lr=3e-3,
        warmup=2,
        save_every=10,
        log_every=1,
        ema_decay=0.5,
        seed=1,
    )
    return DistillConfig(**split_loop({**base, **kw}, DISTILL_LOOP))


def _distance(teacher, student, ds, config):
    g = torch.Generator().manual_seed(123)
    prompts = draw_prompts(ds, list(range(len(ds))), teacher.num_channels, config, g)
    target = sample_with(teacher, prompts, cache=True, **config.teacher.sample_kwargs())
    out = sample_with(student, prompts, cache=True, **config.student.sample_kwargs())
    mask = prompts.generated_mask()[..., None]
    return float(((out - target) ** 2 * mask).sum() / (mask.sum() * out.shape[-1]))


@pytest.mark.parametrize("backbone", ["DiT", "UNetT"])
def test_distillation_lowers_the_students_distance_to_the_teacher(corpus, tmp_path, backbone):
    ds = MelDataset(corpus)
    teacher = random_model(corpus, backbone=backbone)
    student = copy.deepcopy(teacher)
    config = _config()
    before = _distance(teacher, student, ds, config)
    summary = distill(teacher, student, ds, str(tmp_path), config, progress=False)
    after = _distance(teacher, student, ds, config)
    assert summary["step"] == 30
    assert after < 0.5 * before, (before, after)
    assert {"last.pt", "student.safetensors", "distill_log.csv"} <= set(os.listdir(tmp_path))
    assert all(not p.requires_grad or p.grad is None for p in teacher.parameters())


def check_resume_is_exact(corpus, tmp_path, config, before_resume=None):
    """A run killed after step 5 and resumed ends with the same student as a run straight through."""
    ds = MelDataset(corpus)
    reference = copy.deepcopy(_teacher(corpus))
    distill(_teacher(corpus), reference, ds, str(tmp_path / "a"), config, progress=False)

    kill = kill_at(5)

    with pytest.raises(Killed):
        student = copy.deepcopy(_teacher(corpus))
        distill(_teacher(corpus), student, ds, str(tmp_path / "b"), config, progress=False, on_step=kill)
    if before_resume is not None:
        before_resume()
    resumed = copy.deepcopy(_teacher(corpus))
    distill(_teacher(corpus), resumed, ds, str(tmp_path / "b"), config, progress=False)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_distillation_resumes_exactly(corpus, tmp_path):
    config = _config(steps=8, save_every=3, grad_checkpoint=True, velocity_steps=4)  # resumes inside the warm-up
    check_resume_is_exact(corpus, tmp_path, config)


def test_bad_configurations_are_refused(corpus):
    with pytest.raises(ValueError, match="smaller than teacher_steps"):
        DistillConfig(student=student_recipe(32), teacher=SamplingRecipe(steps=32))
    with pytest.raises(ValueError, match="student_grid"):
        student_recipe(grid="cosine")
    from flowtts.config import MelConfig, ModelConfig
    from flowtts.model.build import build_model
    from flowtts.train.distill_config import check_compatible

    teacher = _teacher(corpus)
    other = build_model(
        ModelConfig(
            dim=32, depth=2, heads=2, dim_head=16, text_dim=16, conv_layers=1, mel=MelConfig(n_mel_channels=80)
        ),
        teacher.vocab_char_map,
    )
    with pytest.raises(ValueError, match="mel channels"):
        check_compatible(teacher, other)


DDP_SCRIPT = """
import copy, sys, torch
sys.path.insert(0, {tests!r})
import torch.distributed as dist
from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train.data import MelDataset
from flowtts.train.distill import distill
from flowtts.train.distill_config import DistillConfig
from flowtts.train.loop import LoopSettings
from train.helpers import random_model
ds = MelDataset({corpus!r})
teacher = random_model({corpus!r})
student = copy.deepcopy(teacher)
cfg = DistillConfig(**{config!r})
distill(teacher, student, ds, {out!r}, cfg, progress=False)
rank = dist.get_rank() if dist.is_initialized() else 0
torch.save(student.state_dict(), {out!r} + f"/params{{rank}}.pt")
"""


def run_two_ranks(corpus, tmp_path, **config) -> tuple[dict, dict]:
    """Distil the test teacher under ``torchrun --nproc_per_node=2`` into ``tmp_path``; each rank's student."""
    return helpers.run_two_ranks(DDP_SCRIPT, corpus, tmp_path, config)


def test_two_process_distillation_keeps_ranks_identical(corpus, tmp_path):
    loop = DISTILL_LOOP.with_overrides(steps=4, lr=3e-3, warmup=1, save_every=4)
    config = dict(student=student_recipe(2), teacher=SamplingRecipe(steps=8), velocity_steps=2, batch_size=3, loop=loop)
    a, b = run_two_ranks(corpus, tmp_path, **config, seed=1)
    start = _teacher(corpus).state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _distill_args(tmp_path, corpus, out, *extra):
    teacher = str(tmp_path / "teacher.safetensors")
    base = ["distill", "--teacher", teacher, "--data", corpus, "--out", str(tmp_path / out)]
    return base + ["--student-steps", "2", "--teacher-steps", "8", "-q", *extra]


def test_distill_command_prints_the_report(corpus, tmp_path, capsys):
    import flowtts
    from flowtts.cli import main

    flowtts.save(_teacher(corpus), tmp_path / "teacher.safetensors")
    pool = ["--teacher-pool", "2", "--segment-steps", "1", "--segment-start", "both", "--no-dropout"]
    pool += ["--report-prompts", "3", "--dtype", "bfloat16"]
    code = main(_distill_args(tmp_path, corpus, "run", "--steps", "3", "--batch-size", "2", *pool))
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("student/naive=") and "student_nfe=2" in lines[-1]
    assert f"prompts: 3 prefix prompts, rows 0-2 of {corpus} (report split)" in lines
    assert open(tmp_path / "run" / "report.txt", encoding="utf-8").read().startswith("prompts: 3 prefix")
    assert any(line.startswith("teacher@7 (EPSS") for line in lines)
    files = set(os.listdir(tmp_path / "run"))
    assert {"report.txt", "report.png", "student.safetensors", "teacher_pool.pt"} <= files
    from flowtts.checkpoints.loader import read_metadata

    assert "distill_config" not in read_metadata(str(tmp_path / "run" / "student.safetensors"))  # the recipe, once
    recorded = DistillConfig.from_json(torch.load(tmp_path / "run" / "last.pt", weights_only=True)["distill_config"])
    assert (recorded.teacher_pool, recorded.segment_steps, recorded.student_dropout) == (2, 1, False)
    assert recorded.segment_start == "both" and recorded.dtype == "bfloat16"
    learned = ["--steps", "2", "--learn-times", "--times-lr", "0.3", "--report-prompts", "2"]
    assert main(_distill_args(tmp_path, corpus, "learned", *learned)) == 0
    report = capsys.readouterr().out
    recorded = SamplingRecipe.from_metadata(read_metadata(str(tmp_path / "learned" / "student.safetensors")))
    assert recorded.grid == "custom" and recorded.t_grid != (0.0, 0.5, 1.0)
    assert "student@2 (custom, cfg 0)" in report  # the report samples the student on its learned grid
    code = main(_distill_args(tmp_path, corpus, "noreport", "--steps", "1", "--report-prompts", "0"))
    assert code == 0 and capsys.readouterr().out.strip().splitlines()[-1].startswith("distilled 1 steps")
    assert "report.txt" not in os.listdir(tmp_path / "noreport")
    code = main(_distill_args(tmp_path, corpus, "bad", "--report-prompts", "-1"))
    assert code == 2 and "--report-prompts must be >= 0" in capsys.readouterr().err
    code = main(_distill_args(tmp_path, corpus, "bad", "--student-steps", "8"))
    assert code == 2 and "smaller than teacher_steps" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    code = main(_distill_args(tmp_path, corpus, "bad", "--student-grid", "custom"))
    assert code == 2 and "student_times goes with student_grid='custom'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_distill_args(tmp_path, corpus, "bad", "--student-grid", "custom", "--student-times", "0,half,1"))
    assert "expected comma-separated numbers" in capsys.readouterr().err
    code = main(_distill_args(tmp_path, corpus, "bad", "--student-grid", "custom", "--student-times", "0,0.7,0.2"))
    assert code == 2 and "rise strictly from 0 to 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_max_seconds_stops_early_with_a_checkpoint_that_resumes(corpus, tmp_path):
    ds = MelDataset(corpus)
    config = _config(steps=6, save_every=100)
    student = copy.deepcopy(_teacher(corpus))
    summary = distill(_teacher(corpus), student, ds, str(tmp_path), config, progress=False, max_seconds=0.0)
    assert summary["step"] == 1 and not summary["finished"]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 1  # checkpointed although step 1 is not a save_every step
    summary = distill(_teacher(corpus), copy.deepcopy(_teacher(corpus)), ds, str(tmp_path), config, progress=False)
    assert summary["step"] == 6 and summary["finished"]
    reference = copy.deepcopy(_teacher(corpus))
    distill(_teacher(corpus), reference, ds, str(tmp_path / "straight"), config, progress=False)
    resumed = torch.load(tmp_path / "last.pt", weights_only=True)["student"]
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed[name]), name


def test_evaluate_appends_extra_systems_after_the_standard_rows(corpus):
    from flowtts.train.distill_report import evaluate

    ds = MelDataset(corpus)
    teacher = _teacher(corpus)
    config = _config()
    prompts = draw_prompts(ds, [0, 1], teacher.num_channels, config, torch.Generator().manual_seed(0))
    rows, mels = evaluate(teacher, teacher, prompts, config, extra={"teacher@8 again": (teacher, dict(steps=8))})
    assert [r["system"] for r in rows][-1] == "teacher@8 again" and len(rows) == 5
    # teacher@8 with cfg 1 (the default) differs from the cfg-2 reference: distance measured, not copied
    assert rows[-1]["distance"] > 0 and rows[-1]["NFE"] == 16
    assert set(mels) == {r["system"] for r in rows}


def test_students_carry_their_sampling_settings(corpus, tmp_path):
    import flowtts
    from flowtts.synthesis import recommended_options

    config = _config(steps=1, student=student_recipe(3, "sway"))
    distill(
        _teacher(corpus), copy.deepcopy(_teacher(corpus)), MelDataset(corpus), str(tmp_path), config, progress=False
    )
    student = flowtts.load(tmp_path / "student.safetensors")
    options = recommended_options(student)
    assert (options.steps, options.cfg_strength, options.sway_sampling_coef) == (3, 0.0, -1.0)
    assert recommended_options(student, steps=6, cfg_strength=None).steps == 6
    assert options.solver_kwargs() == dict(steps=3, cfg_strength=0.0, sway_sampling_coef=-1.0, use_epss=False)
    plain = recommended_options(_teacher(corpus))
    assert (plain.steps, plain.cfg_strength, plain.sway_sampling_coef) == (32, 2.0, -1.0)


def test_students_are_sampled_as_the_teachers_file_records_its_data(corpus, tmp_path):
    import flowtts
    from flowtts.synthesis import recommended_options

    ds = MelDataset(corpus)
    teacher = _teacher(corpus)
    teacher.metadata = {"speed": "0.9", "ref_silence": "0.5", "target_rms": "0.05"}
    student = _teacher(corpus)  # a student file of its own, recording none of them
    config = _config(steps=2, save_every=100)
    distill(
        teacher,
        student,
        ds,
        str(tmp_path),
        config,
        progress=False,
        eval_prompts=_eval_prompts(ds, config),
        eval_every=1,
    )
    for name in ("student.safetensors", "best.safetensors"):
        options = recommended_options(flowtts.load(str(tmp_path / name)))
        assert (options.speed, options.ref_silence, options.target_rms) == pytest.approx((0.9, 0.5, 0.05)), name
        assert options.steps == 2 and options.cfg_strength == 0.0  # and the student's own recipe


def test_custom_student_grids_are_validated_and_travel_with_the_student(corpus, tmp_path):
    import flowtts
    from flowtts.synthesis import recommended_options

    with pytest.raises(ValueError, match="student_times goes with"):
        student_recipe(grid="custom")
    with pytest.raises(ValueError, match="student_times goes with"):
        student_recipe(times=(0, 0.5, 1))
    with pytest.raises(ValueError, match="student_steps \\+ 1 = 5"):
        student_recipe(grid="custom", times=(0, 0.5, 1))
    with pytest.raises(ValueError, match="rise strictly from 0 to 1"):
        student_recipe(2, "custom", times=(0, 0.6, 0.6))
    with pytest.raises(ValueError, match="velocity_steps"):
        DistillConfig(velocity_steps=5, loop=DISTILL_LOOP.with_overrides(steps=4))

    times = (0.0, 0.1, 1.0)
    config = _config(steps=1, student=student_recipe(2, "custom", times=times))
    assert DistillConfig.from_json(json.dumps(dataclasses.asdict(config))) == config
    distill(
        _teacher(corpus), copy.deepcopy(_teacher(corpus)), MelDataset(corpus), str(tmp_path), config, progress=False
    )
    student = flowtts.load(tmp_path / "student.safetensors")
    options = recommended_options(student)
    assert options.t_grid == times and options.cfg_strength == 0.0
    assert options.solver_kwargs() == dict(steps=2, cfg_strength=0.0, sway_sampling_coef=None, t_grid=times)
    # an explicit step count replaces the recorded grid
    assert recommended_options(student, steps=5).solver_kwargs()["steps"] == 5
    assert "t_grid" not in recommended_options(student, steps=5).solver_kwargs()


def test_velocity_warm_up_targets_are_the_teachers_guided_jump(corpus):
    """The warm-up's teacher target equals x_t + (1 - t) v_guided(t, x_t), computed here from the DiT directly."""
    from flowtts.model.cfm import lens_to_mask

    ds = MelDataset(corpus)
    teacher = _teacher(corpus).double()
    config = _config(student=student_recipe(2, "custom", times=(0.0, 0.25, 1.0)), velocity_steps=5)
    prompts = draw_prompts(ds, [0, 1], teacher.num_channels, config, torch.Generator().manual_seed(3))
    prompts = prompts.rows([0, 1])
    t = 0.25
    noised = prompts.noised(t)
    assert torch.allclose(noised.noise, 0.75 * prompts.noise + 0.25 * prompts.data)
    noised.cond, noised.noise = noised.cond.double(), noised.noise.double()
    out = sample_with(teacher, noised, cache=True, steps=1, cfg_strength=2.0, sway_sampling_coef=None, t_grid=(t, 1))

    n = noised.noise.shape[1]
    cond = torch.zeros_like(noised.noise)
    cond[:, : noised.cond.shape[1]] = noised.cond
    cond = cond * lens_to_mask(noised.lens, length=n)[..., None]
    text = teacher._text_ids(noised.texts, 2)
    time = torch.full((2,), t, dtype=torch.float64)
    dit = teacher.transformer
    for i in range(2):
        d = int(noised.durations[i])
        x = noised.noise[i : i + 1, :d]
        c = cond[i : i + 1, :d]
        ids = text[i : i + 1]
        v = dit(x=x, cond=c, text=ids, time=time[:1], mask=None, drop_audio_cond=False, drop_text=False)
        v_null = dit(x=x, cond=c, text=ids, time=time[:1], mask=None, drop_audio_cond=True, drop_text=True)
        expected = x + (1 - t) * (v + 2.0 * (v - v_null))
        gen = slice(int(noised.lens[i]), d)
        assert torch.allclose(out[i : i + 1, gen], expected[:, gen], atol=1e-9), i


def test_velocity_warm_up_moves_the_student_toward_the_guided_teacher(corpus, tmp_path):
    ds = MelDataset(corpus)
    teacher = _teacher(corpus)
    student = copy.deepcopy(teacher)
    times = (0.0, 0.3, 1.0)
    config = _config(student=student_recipe(2, "custom", times=times), velocity_steps=25, steps=25)

    def jump_distance(model):
        g = torch.Generator().manual_seed(99)
        total = 0.0
        for t in times[:-1]:
            prompts = draw_prompts(ds, list(range(len(ds))), teacher.num_channels, config, g).noised(t)
            kw = dict(steps=1, sway_sampling_coef=None, t_grid=(t, 1.0))
            target = sample_with(teacher, prompts, cache=True, cfg_strength=2.0, **kw)
            out = sample_with(model, prompts, cache=True, cfg_strength=0.0, **kw)
            mask = prompts.generated_mask()[..., None]
            total += float(((out - target) ** 2 * mask).sum() / mask.sum())
        return total

    before = jump_distance(student)
    distill(teacher, student, ds, str(tmp_path), config, progress=False)
    assert jump_distance(student) < 0.5 * before


def _eval_prompts(ds, config):
    return draw_prompts(ds, [0, 1, 2], 100, config, torch.Generator().manual_seed(1))


def test_held_out_evaluation_logs_distances_and_keeps_the_closest_student(corpus, tmp_path):
    import csv

    import flowtts

    ds = MelDataset(corpus)
    config = _config(steps=12, save_every=100)
    prompts = _eval_prompts(ds, config)
    plain = copy.deepcopy(_teacher(corpus))
    distill(_teacher(corpus), plain, ds, str(tmp_path / "plain"), config, progress=False)
    student = copy.deepcopy(_teacher(corpus))
    out = tmp_path / "eval"
    distill(_teacher(corpus), student, ds, str(out), config, progress=False, eval_prompts=prompts, eval_every=5)
    for (name, a), b in zip(plain.state_dict().items(), student.state_dict().values()):
        assert torch.equal(a, b), name  # evaluating changes nothing in training
    with open(out / "distill_eval.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 12]  # the start, every 5 steps and the last
    distances = [float(r["distance"]) for r in rows]
    assert [float(r["best_distance"]) for r in rows] == pytest.approx(
        [min(distances[: i + 1]) for i in range(4)], abs=1e-6
    )
    assert max(distances) > min(distances)  # the student moved
    best = flowtts.load(str(out / "best.safetensors"))
    from flowtts.checkpoints.loader import read_metadata

    meta = read_metadata(str(out / "best.safetensors"))
    assert int(meta["step"]) == int(rows[distances.index(min(distances))]["step"])
    # an independent recomputation of the kept student's distance
    reference = sample_with(_teacher(corpus), prompts, cache=True, **config.teacher.sample_kwargs())
    mine = sample_with(best, prompts, cache=True, **config.student.sample_kwargs())
    mask = prompts.generated_mask()[..., None]
    expected = float(((mine - reference) ** 2 * mask).sum() / (mask.sum() * 100))
    assert float(meta["eval_distance"]) == pytest.approx(expected, rel=1e-5)
    assert min(distances) == pytest.approx(expected, rel=1e-5)


def test_held_out_evaluation_keeps_its_best_across_a_resume(corpus, tmp_path):
    import csv

    ds = MelDataset(corpus)
    config = _config(steps=10, save_every=2)
    prompts = _eval_prompts(ds, config)

    kill = kill_at(5)

    kw = dict(progress=False, eval_prompts=prompts, eval_every=2)
    with pytest.raises(Killed):
        distill(_teacher(corpus), copy.deepcopy(_teacher(corpus)), ds, str(tmp_path), config, on_step=kill, **kw)
    distill(_teacher(corpus), copy.deepcopy(_teacher(corpus)), ds, str(tmp_path), config, **kw)
    with open(tmp_path / "distill_eval.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 6, 8, 10]  # resumed from step 4's checkpoint
    distances = [float(r["distance"]) for r in rows]
    assert float(rows[-1]["best_distance"]) == pytest.approx(min(distances), abs=1e-6)


def test_held_out_evaluation_needs_prompts(corpus, tmp_path):
    ds = MelDataset(corpus)
    with pytest.raises(ValueError, match="eval_every"):
        distill(_teacher(corpus), _teacher(corpus), ds, str(tmp_path / "x"), _config(), progress=False, eval_every=5)
    assert not (tmp_path / "x").exists()


def test_distill_command_evaluates_on_held_out_rows_after_the_reports(corpus, tmp_path, capsys):
    import csv

    import flowtts
    from flowtts.cli import main

    flowtts.save(_teacher(corpus), tmp_path / "teacher.safetensors")
    n = len(MelDataset(corpus))
    run = ["--steps", "4", "--batch-size", "2", "--report-prompts", "2", "--eval-every", "2", "--eval-prompts", "2"]
    assert main(_distill_args(tmp_path, corpus, "run", *run)) == 0
    with open(tmp_path / "run" / "distill_eval.csv", encoding="utf-8") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 2, 4]
    assert "best.safetensors" in os.listdir(tmp_path / "run")
    capsys.readouterr()
    code = main(_distill_args(tmp_path, corpus, "bad", "--eval-every", "2", "--eval-start", str(n)))
    assert code == 2 and f"held-out set has {n} rows, none from --eval-start {n} on" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    code = main(_distill_args(tmp_path, corpus, "bad", "--eval-every", "-1"))
    assert code == 2 and "--eval-every must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_distill_command_with_pair_prompts_records_them_and_reports_on_pairs(corpus, tmp_path, capsys):
    import csv

    import flowtts
    from flowtts.cli import main

    flowtts.save(_teacher(corpus), tmp_path / "teacher.safetensors")
    run = ["--steps", "2", "--batch-size", "2", "--prompts", "pair", "--report-prompts", "2"]
    assert main(_distill_args(tmp_path, corpus, "run", *run, "--eval-every", "2", "--eval-prompts", "3")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("student/naive=")
    chosen = "best.safetensors was chosen on rows 2-4 (selection split)"
    assert f"prompts: 2 pair prompts, rows 0-1 of {corpus} (report split); {chosen}" in lines
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert DistillConfig.from_json(state["distill_config"]).prompts == "pair"
    with open(tmp_path / "run" / "distill_eval.csv", encoding="utf-8") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 2]
    code = main(_distill_args(tmp_path, corpus, "bad", *run[:6], "--report-prompts", "1"))
    assert code == 2 and "pair prompts need at least 2 held-out rows, got 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_bfloat16_distillation_tracks_float32_and_repeats_exactly(corpus, tmp_path):
    ds = MelDataset(corpus)
    runs = {}
    for name, dtype in (("fp32", None), ("bf16", "bfloat16"), ("bf16_again", "bfloat16")):
        config = _config(steps=3, velocity_steps=1, segment_steps=1, segment_start="both", dtype=dtype)
        losses = []
        student = copy.deepcopy(_teacher(corpus))
        distill(
            _teacher(corpus),
            student,
            ds,
            str(tmp_path / name),
            config,
            progress=False,
            on_step=lambda s, v, out=losses: out.append(v),
        )
        runs[name] = (losses, student)
    fp32, bf16 = runs["fp32"][0], runs["bf16"][0]
    assert len(bf16) == 3  # a velocity, a segment and a sampler-through step
    for a, b in zip(fp32, bf16):
        assert abs(a - b) <= 0.02 * abs(a), (fp32, bf16)  # bf16 rounding (~0.3 % here), not another computation
    assert fp32 != bf16  # autocast was on
    assert runs["bf16_again"][0] == bf16
    for (name, a), b in zip(runs["bf16"][1].state_dict().items(), runs["bf16_again"][1].state_dict().values()):
        assert torch.equal(a, b), name
        assert a.dtype == torch.float32, name  # the weights stay float32


def test_distillation_precision_is_checked_and_separates_pools(corpus, tmp_path):
    from flowtts.train.teacher_pool import _fingerprint

    with pytest.raises(ValueError, match="dtype must be one of"):
        DistillConfig(dtype="float64")
    ds = MelDataset(corpus)
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        distill(_teacher(corpus), _teacher(corpus), ds, str(tmp_path / "x"), _config(dtype="float16"), progress=False)
    assert not (tmp_path / "x").exists()
    teacher = _teacher(corpus)
    prints = {d: _fingerprint(teacher, ds, _config(dtype=d), 4) for d in (None, "float32", "bfloat16")}
    assert prints[None] == prints["float32"] != prints["bfloat16"]


# ----------------------------------------------------------------- learned solver times


def test_learned_times_alone_bring_a_fixed_student_closer(corpus, tmp_path):
    from conftest import randomise
    from flowtts.checkpoints.loader import read_metadata

    ds = MelDataset(corpus)
    # smaller weights than _teacher's: a velocity smooth in t, whose 2-step distance falls from a middle
    # time of 0.1 (0.0009) to its best near 0.5 (0.0003)
    teacher = randomise(_teacher(corpus), std=0.05, seed=5).eval()
    student = copy.deepcopy(teacher)
    # only the schedule learns (lr 0), from the poor grid
    kw = dict(student=student_recipe(2, "custom", times=(0.0, 0.1, 1.0)), learn_times=True, times_lr=0.3)
    config = _config(steps=16, lr=0.0, save_every=100, student_dropout=False, **kw)
    before = _distance(teacher, student, ds, config)
    distill(teacher, student, ds, str(tmp_path), config, progress=False)
    for (name, a), b in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert torch.equal(a, b), name  # lr 0: the weights did not move
    recipe = SamplingRecipe.from_metadata(read_metadata(str(tmp_path / "student.safetensors")))
    assert recipe.grid == "custom"
    times = recipe.t_grid
    assert times[0] == 0.0 and times[-1] == 1.0 and 0.2 < times[1] < 0.8
    after = _distance(teacher, student, ds, dataclasses.replace(config, student=recipe))
    assert after < 0.7 * before, (before, after, times)


def test_learned_times_resume_exactly_and_travel_with_the_student(corpus, tmp_path):
    from flowtts.checkpoints.loader import read_metadata

    config = _config(steps=6, save_every=3, learn_times=True, times_lr=0.05, student=student_recipe(3))
    check_resume_is_exact(corpus, tmp_path, config)
    a, b = (read_metadata(str(tmp_path / run / "student.safetensors"))["sampling_recipe"] for run in "ab")
    assert a == b
    times = SamplingRecipe.from_json(a).t_grid
    assert len(times) == 4 and times != tuple(config.student.times().tolist())


def test_learned_times_are_refused_with_fixed_time_targets():
    loop = DISTILL_LOOP.with_overrides(steps=10)
    with pytest.raises(ValueError, match="learn_times .* needs velocity_steps=0 and segment_steps=0"):
        DistillConfig(learn_times=True, segment_steps=2, loop=loop)
    with pytest.raises(ValueError, match="learn_times .* needs velocity_steps=0"):
        DistillConfig(learn_times=True, velocity_steps=2, loop=loop)
    with pytest.raises(ValueError, match="times_lr must be >= 0"):
        DistillConfig(learn_times=True, times_lr=-1.0)
    with pytest.raises(ValueError, match="learn_times needs grid gaps larger than"):
        DistillConfig(learn_times=True, student=student_recipe(3, "custom", times=(0, 0.5, 0.50001, 1)))


def test_learned_times_stay_ordered_whatever_the_parameters():
    from flowtts.train.distill_config import LearnedTimes

    times = LearnedTimes((0.0, 0.0192, 0.0761, 0.2929, 1.0))
    assert torch.allclose(times(), torch.tensor([0.0, 0.0192, 0.0761, 0.2929, 1.0], dtype=torch.float64))
    with torch.no_grad():
        times.log_gaps.copy_(torch.tensor([30.0, -30.0, 0.0, 5.0], dtype=torch.float64))
    t = times().float()  # strictly increasing even in float32
    assert t[0] == 0.0 and t[-1] == 1.0 and bool((t[1:] > t[:-1]).all())
    with pytest.raises(ValueError, match="gaps larger than"):
        LearnedTimes((0.0, 0.5, 0.50001, 1.0))


def test_the_ctc_term_lowers_the_students_ctc_loss_and_is_checked(corpus, tmp_path):
    from flowtts.config import MelConfig
    from flowtts.eval.recognizer import CTCRecognizer, RecognizerConfig, save_recognizer
    from flowtts.train.distill import _StudentLoss

    torch.manual_seed(2)
    recognizer = CTCRecognizer(RecognizerConfig(channels=16, hidden=8, gru_layers=1, dropout=0.0, mel=MelConfig()))
    path = str(tmp_path / "rec.safetensors")
    save_recognizer(recognizer, path)
    ds = MelDataset(corpus)
    prompts = draw_prompts(ds, list(range(len(ds))), 100, _config(), torch.Generator().manual_seed(4))
    recognizer.eval()

    def ctc_of(student):  # the term on fixed prompts, independently: the whole text on the whole mel
        out = sample_with(student, prompts, cache=True, **_config().student.sample_kwargs())
        loss, scored = recognizer.ctc_loss(out, prompts.durations, prompts.texts)
        return float(loss[scored].mean())

    teacher = _teacher(corpus)
    target = sample_with(teacher, prompts, cache=True, **_config().teacher.sample_kwargs())
    term = _StudentLoss(copy.deepcopy(teacher), _config(), None, recognizer)(prompts, target)[2]
    assert abs(float(term) / len(ds) - ctc_of(teacher)) < 1e-4  # every prompt scored, summed
    plain, weighted = copy.deepcopy(teacher), copy.deepcopy(teacher)
    distill(teacher, plain, ds, str(tmp_path / "p"), _config(steps=12), progress=False)
    distill(
        teacher, weighted, ds, str(tmp_path / "w"), _config(steps=12, ctc_weight=1.0, recognizer=path), progress=False
    )
    assert ctc_of(weighted) < ctc_of(plain) - 0.05
    unprompted = draw_kind(ds, [0, 1], "unprompted", 100, _config(), torch.Generator().manual_seed(4))
    target = sample_with(teacher, unprompted, cache=True, **_config().teacher.sample_kwargs())
    term = _StudentLoss(copy.deepcopy(teacher), _config(), None, recognizer)(unprompted, target)[2]
    out = sample_with(teacher, unprompted, cache=True, **_config().student.sample_kwargs())
    expected, _ = recognizer.ctc_loss(out[:, 1:], unprompted.durations - 1, unprompted.texts)  # not the no-audio frame
    assert abs(float(term) - float(expected.sum())) < 1e-4
    with pytest.raises(ValueError, match="teacher_pool holds prefix or pair prompts"):
        _config(prompts="unprompted", teacher_pool=8)
    with pytest.raises(ValueError, match="ctc_weight scores the student's whole samples"):
        _config(ctc_weight=1.0, velocity_steps=2)
    with pytest.raises(ValueError, match="ctc_weight must be >= 0"):
        _config(ctc_weight=-1.0)
