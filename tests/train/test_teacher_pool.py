import copy
import os

import pytest
import torch

from flowtts.sampling.grids import make_grid
from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train import teacher_pool
from flowtts.train.data import MelDataset
from flowtts.train.distill import _StudentLoss, distill
from flowtts.train.distill_config import DISTILL_LOOP, DistillConfig, student_recipe
from flowtts.train.prompts import draw_prompts, sample_with
from flowtts.train.teacher_pool import TeacherPool, build_pool, load_or_build, teacher_grid, teacher_states
from train.test_distill import (  # noqa: F401  (corpus: a fixture)
    _config,
    _teacher,
    check_resume_is_exact,
    corpus,
    run_two_ranks,
)


def test_teacher_grid_holds_the_student_times_exactly():
    times = (0.0, 0.0192, 0.0761, 0.2929, 1.0)  # rounded sway times: near teacher times, which they replace
    teacher = SamplingRecipe(steps=32, sway_sampling_coef=-1.0)
    config = DistillConfig(student=student_recipe(4, "custom", times=times), teacher=teacher)
    grid, positions = teacher_grid(config)
    assert torch.all(grid[1:] > grid[:-1])
    assert torch.allclose(grid[positions].double(), torch.tensor(times, dtype=torch.float64), atol=1e-7)
    assert grid.numel() == 33  # three teacher times within 1e-4 were replaced, none added
    teacher = make_grid(32, sway_coef=-1.0)
    assert torch.all(torch.isin(teacher, grid) | ((teacher[:, None] - grid[positions]).abs().min(1).values < 1e-4))

    uniform = DistillConfig(student=student_recipe(4), teacher=SamplingRecipe(steps=32, sway_sampling_coef=-1.0))
    grid, positions = teacher_grid(uniform)
    assert grid.numel() == 33 + 3  # 0.25, 0.5, 0.75 are not on the sway grid: added
    assert torch.allclose(grid[positions], torch.linspace(0, 1, 5))


def test_teacher_states_are_the_teachers_solve_stopped_at_each_student_time(corpus):  # noqa: F811
    ds = MelDataset(corpus)
    teacher = _teacher(corpus).double()
    config = _config(student=student_recipe(2, "custom", times=(0.0, 0.3, 1.0)), teacher=SamplingRecipe(steps=8))
    prompts = draw_prompts(ds, [0, 3], teacher.num_channels, config, torch.Generator().manual_seed(4))
    prompts.cond, prompts.noise = prompts.cond.double(), prompts.noise.double()
    states = teacher_states(teacher, prompts, config).double()
    assert states.shape == (3, 2, prompts.noise.shape[1], teacher.num_channels)
    assert torch.allclose(states[0], prompts.noise)
    grid, positions = teacher_grid(config)
    mask = prompts.generated_mask()[..., None]
    for k, pos in enumerate(positions[1:], start=1):  # an independent solve over the grid up to that time
        out = sample_with(
            teacher, prompts, cache=True, cfg_strength=config.teacher.cfg_strength, t_grid=grid[: pos + 1]
        )
        assert torch.allclose(out * mask, states[k].to(out) * mask, atol=1e-6), k
    assert not torch.allclose(states[1] * mask, states[2] * mask)


def test_pool_batches_reproduce_the_drawn_prompts_and_targets(corpus, tmp_path):  # noqa: F811
    ds = MelDataset(corpus)
    teacher = _teacher(corpus)
    config = _config(batch_size=3)
    pool = build_pool(teacher, ds, config, 7)
    assert len(pool) == 7 and sorted(pool.index.tolist()[:7]) == sorted(set(pool.index.tolist()))  # no repeats
    # the pool's third chunk (rows 6) equals draw_prompts on the same generator position
    g = torch.Generator().manual_seed(config.seed * 15_485_863 + 17)
    order = torch.randperm(len(ds), generator=g).tolist()[:7]
    chunks = [draw_prompts(ds, order[i : i + 3], teacher.num_channels, config, g) for i in (0, 3, 6)]
    prompts, states = pool.batch(ds, [3, 4, 5])
    assert torch.equal(prompts.lens, chunks[1].lens) and prompts.texts == chunks[1].texts
    assert torch.equal(prompts.durations, chunks[1].durations)
    mask = prompts.generated_mask()[..., None]
    assert torch.equal(prompts.noise * mask, chunks[1].noise * mask)
    expected = teacher_states(teacher, chunks[1], config)
    assert torch.allclose(states * mask, expected * mask, atol=1e-6)
    assert torch.equal(prompts.data * mask, chunks[1].data * mask)

    path = str(tmp_path / "pool.pt")
    pool.save(path)
    again = TeacherPool.load(path)
    assert again.fingerprint == pool.fingerprint and all(torch.equal(a, b) for a, b in zip(again.states, pool.states))


@pytest.fixture
def counted(corpus, monkeypatch):  # noqa: F811
    """Dataset, teacher, config (batch 2) and a list that grows by one per teacher_states() call."""
    calls = []
    real = teacher_pool.teacher_states
    monkeypatch.setattr(teacher_pool, "teacher_states", lambda *a: calls.append(1) or real(*a))
    return MelDataset(corpus), _teacher(corpus), _config(batch_size=2), calls


def test_a_saved_pool_is_reused_only_for_the_same_teacher_and_settings(counted, tmp_path):
    ds, teacher, config, calls = counted
    path = str(tmp_path / "pool.pt")
    first = load_or_build(path, teacher, ds, config, 4)
    assert len(calls) == 2 and os.path.exists(path)
    load_or_build(path, teacher, ds, config, 4)
    assert len(calls) == 2  # reused
    load_or_build(path, teacher, ds, _config(batch_size=2, teacher=SamplingRecipe(steps=8, cfg_strength=1.0)), 4)
    assert len(calls) == 4  # other guidance: rebuilt
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    rebuilt = load_or_build(path, other, ds, config, 4)
    assert len(calls) == 6 and rebuilt.fingerprint != first.fingerprint


def test_a_larger_pool_extends_a_saved_smaller_one(counted, tmp_path):
    """Growing --teacher-pool samples only the new trajectories, and the result equals a pool built at once."""
    ds, teacher, config, calls = counted
    path = str(tmp_path / "pool.pt")
    small = load_or_build(path, teacher, ds, config, 4)
    assert len(calls) == 2
    grown = load_or_build(path, teacher, ds, config, 7)
    assert len(calls) == 4  # chunks 3 and 4 only
    assert TeacherPool.load(path).fingerprint == grown.fingerprint
    at_once = build_pool(teacher, ds, config, 7)
    assert torch.equal(grown.index, at_once.index) and torch.equal(grown.n_prompt, at_once.n_prompt)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grown.states, at_once.states))
    assert all(torch.equal(a, b) for a, b in zip(grown.states[:4], small.states))  # kept as saved
    load_or_build(str(tmp_path / "other.pt"), teacher, ds, _config(batch_size=2, seed=5), 4)
    os.replace(tmp_path / "other.pt", path)  # other noises: not a prefix, so rebuilt
    calls.clear()
    load_or_build(path, teacher, ds, config, 6)
    assert len(calls) == 3


def test_segment_loss_sums_one_student_step_per_segment(corpus):  # noqa: F811
    """Against the student's own solve: with exact teacher states equal to the student's trajectory, the loss is 0;
    moving one state changes it by exactly that segment's error."""
    ds = MelDataset(corpus)
    student = _teacher(corpus).double()
    config = _config(student=student_recipe(2, "custom", times=(0.0, 0.4, 1.0)))
    prompts = draw_prompts(ds, [1, 2], student.num_channels, config, torch.Generator().manual_seed(8))
    prompts.cond, prompts.noise = prompts.cond.double(), prompts.noise.double()
    _, trajectory = student.sample(
        prompts.cond, prompts.texts, prompts.durations, lens=prompts.lens, noise=prompts.noise, isolate_batch=True,
        cfg_strength=0.0, t_grid=(0.0, 0.4, 1.0),
    )  # fmt: skip
    loss = _StudentLoss(student, config)
    squared, count, _ = loss(prompts, trajectory, None, [0.0, 0.4, 1.0])
    assert float(squared.detach()) < 1e-18
    moved = trajectory.clone()
    moved[2] += 0.5
    squared, count, _ = loss(prompts, moved, None, [0.0, 0.4, 1.0])
    assert count == prompts.generated_mask().sum() * student.num_channels
    assert float(squared.detach()) == pytest.approx(0.25 * float(count) / 2, rel=1e-9)  # one of two segments off by 0.5


def test_on_policy_segments_start_from_the_students_own_states(corpus):  # noqa: F811
    """segment_start="student": each step starts where the student's own solve is, so moving a teacher state
    changes only the segment that ends there; "both" adds the teacher-start terms (shared first segment once)."""
    ds = MelDataset(corpus)
    student = _teacher(corpus).double()
    times = (0.0, 0.4, 1.0)
    prompts = draw_prompts(ds, [1, 2], student.num_channels, _config(), torch.Generator().manual_seed(8))
    prompts.cond, prompts.noise = prompts.cond.double(), prompts.noise.double()
    _, own = student.sample(
        prompts.cond, prompts.texts, prompts.durations, lens=prompts.lens, noise=prompts.noise, isolate_batch=True,
        cfg_strength=0.0, t_grid=times,
    )  # fmt: skip
    count = float(prompts.generated_mask().sum() * student.num_channels)
    losses = {}
    for start in ("teacher", "student", "both"):
        config = _config(student=student_recipe(2, "custom", times=times), segment_start=start)
        loss = _StudentLoss(student, config)
        assert float(loss(prompts, own, None, list(times))[0].detach()) < 1e-18
        moved = own.clone()
        moved[1] += 0.5  # the teacher's middle state
        losses[start] = float(loss(prompts, moved, None, list(times))[0].detach())
    assert losses["student"] == pytest.approx(
        0.25 * count / 2, rel=1e-9
    )  # the second step starts on the student's path
    assert losses["teacher"] > losses["student"] * 1.01  # it starts off the path, from the moved state
    assert 3 * losses["both"] == pytest.approx(2 * losses["teacher"] + 0.0, rel=1e-9)


@pytest.mark.parametrize("start", ["teacher", "student"])
def test_segment_steps_from_a_pool_move_the_student_toward_the_teacher(corpus, tmp_path, start):  # noqa: F811
    from train.test_distill import _distance

    ds = MelDataset(corpus)
    teacher = _teacher(corpus)
    student = copy.deepcopy(teacher)
    config = _config(steps=30, segment_steps=30, teacher_pool=8, student_dropout=False, segment_start=start)
    before = _distance(teacher, student, ds, config)
    distill(teacher, student, ds, str(tmp_path), config, progress=False)
    assert not student.training
    assert _distance(teacher, student, ds, config) < 0.5 * before
    assert os.path.exists(tmp_path / "teacher_pool.pt")


def test_pool_runs_resume_exactly_without_sampling_the_teacher_again(corpus, tmp_path, monkeypatch):  # noqa: F811
    config = _config(steps=8, save_every=3, segment_steps=4, teacher_pool=5, velocity_steps=1)
    calls = []

    def count_teacher_calls():
        monkeypatch.setattr(teacher_pool, "teacher_states", lambda *a: calls.append(1))

    check_resume_is_exact(corpus, tmp_path, config, before_resume=count_teacher_calls)
    assert calls == []  # the resumed run read the saved pool


def test_bad_pool_settings_are_refused():
    with pytest.raises(ValueError, match="segment_steps"):
        DistillConfig(loop=DISTILL_LOOP.with_overrides(steps=10), velocity_steps=6, segment_steps=5)
    with pytest.raises(ValueError, match="segment_start must be one of"):
        DistillConfig(segment_start="own")
    with pytest.raises(ValueError, match="teacher_pool must be >= 0"):
        DistillConfig(teacher_pool=-1)
    config = DistillConfig(loop=DISTILL_LOOP.with_overrides(steps=5), velocity_steps=1, segment_steps=2)
    assert [config.phase(s) for s in range(5)] == [
        "velocity", "segment", "segment", "sampler", "sampler",
    ]  # fmt: skip


def test_two_processes_share_one_pool_and_stay_identical(corpus, tmp_path):  # noqa: F811
    recipes = dict(student=student_recipe(2), teacher=SamplingRecipe(steps=8))
    config = dict(**recipes, segment_steps=2, teacher_pool=5, batch_size=3)
    loop = DISTILL_LOOP.with_overrides(steps=4, lr=3e-3, warmup=1, save_every=4)
    a, b = run_two_ranks(corpus, tmp_path, **config, loop=loop, seed=1)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the pool the two ranks built together (each sampled every other batch) equals a one-process pool
    ds = MelDataset(corpus)
    config = DistillConfig(**recipes, loop=DISTILL_LOOP.with_overrides(steps=4), batch_size=3, seed=1)
    alone = build_pool(_teacher(corpus), ds, config, 5)
    shared = TeacherPool.load(str(tmp_path / "teacher_pool.pt"))
    assert torch.equal(shared.index, alone.index) and torch.equal(shared.n_prompt, alone.n_prompt)
    for x, y in zip(shared.states, alone.states):
        assert torch.allclose(x, y, atol=1e-5)


def test_pair_pools_hold_the_drawn_pairs_and_their_teacher_states(corpus, tmp_path):  # noqa: F811
    from flowtts.train.prompts import draw_pair_prompts, draw_partners

    ds = MelDataset(corpus)
    teacher = _teacher(corpus)
    config = _config(batch_size=2, prompts="pair")
    pool = build_pool(teacher, ds, config, 4)
    g = torch.Generator().manual_seed(config.seed * 15_485_863 + 17)
    order = torch.randperm(len(ds), generator=g).tolist()[:4]
    chunks = []
    for i in (0, 2):
        pairs = draw_partners(ds, order[i : i + 2], g)
        chunks.append((pairs, draw_pair_prompts(ds, pairs, teacher.num_channels, g)))
    pairs, expected = chunks[1]
    assert pool.partner.tolist()[2:] == [b for _, b in pairs] and all(a != b for a, b in pairs)
    prompts, states = pool.batch(ds, [2, 3])
    assert prompts.targets == expected.targets and prompts.texts == expected.texts
    assert torch.equal(prompts.lens, expected.lens) and torch.equal(prompts.durations, expected.durations)
    mask = prompts.generated_mask()[..., None]
    assert torch.equal(prompts.noise * mask, expected.noise * mask)
    assert torch.allclose(states * mask, teacher_states(teacher, expected, config) * mask, atol=1e-6)
    path = str(tmp_path / "pool.pt")
    pool.save(path)
    assert torch.equal(TeacherPool.load(path).partner, pool.partner)
    assert build_pool(teacher, ds, _config(batch_size=2), 4).fingerprint != pool.fingerprint
    with pytest.raises(ValueError, match="mixes pair and prefix"):
        TeacherPool(pool.index, pool.n_prompt, pool.states, "", torch.tensor([1, -1, 2, 3])).batch(ds, [0, 1])


def test_pair_distillation_from_a_pool_moves_the_student_toward_the_teacher_on_new_pairs(corpus, tmp_path):  # noqa: F811
    from flowtts.train.prompts import fixed_prompts, generated_distance

    ds = MelDataset(corpus)
    teacher = _teacher(corpus)
    student = copy.deepcopy(teacher)
    config = _config(steps=30, teacher_pool=6, prompts="pair", student_dropout=False)
    held = fixed_prompts(ds, list(range(len(ds))), "pair", teacher.num_channels, config, seed=9)

    def distance():
        target = sample_with(teacher, held, cache=True, **config.teacher.sample_kwargs())
        out = sample_with(student, held, cache=True, **config.student.sample_kwargs())
        return generated_distance(out, target, held)

    before = distance()
    distill(teacher, student, ds, str(tmp_path), config, progress=False)
    assert distance() < 0.5 * before
