import copy

import pytest
import torch

from flowtts.sampling import integrate, make_grid, uniform
from flowtts.train.fewstep.progressive import (
    ProgressiveSettings,
    grid_triples,
    halving_schedule,
    progressive_loss,
    round_grid,
    two_step_target,
)
from flowtts.train.fewstep.velocity import euler_map, guided, renoise
from train.fewstep.gaussian import Gaussian, HatField, noise, single_thread  # noqa: F401 (autouse)

DATA = Gaussian([1.0, -0.5, 2.0], [0.5, 1.5, 0.8])


def test_rounds_halve_and_their_grids_nest():
    assert halving_schedule(32, 1) == (32, 16, 8, 4, 2, 1)
    assert ProgressiveSettings(start_steps=8).rounds() == [(8, 4), (4, 2), (2, 1)]
    for bad in [(24, 1), (1, 1), (8, 3)]:
        with pytest.raises(ValueError):
            halving_schedule(*bad)
    teacher = round_grid(16, sway_coef=-1.0)
    triples = grid_triples(teacher)
    assert torch.equal(triples[:, 0], teacher[:-1:2]) and torch.equal(triples[-1], teacher[-3:])
    assert torch.allclose(teacher[::2], make_grid(8, use_epss=False, sway_coef=-1.0), atol=1e-7)


def test_the_target_is_two_teacher_steps_and_the_loss_is_zero_for_the_exact_student():
    x = noise(32, 3, torch.Generator().manual_seed(0))
    step = euler_map(DATA.velocity)
    assert torch.equal(two_step_target(step, x, 0.0, 0.25, 0.5), step(step(x, 0.0, 0.25), 0.25, 0.5))
    exact = DATA.flow
    assert progressive_loss(exact, exact, DATA.flow(x, 0, 0.2), 0.2, 0.5, 0.9) < 1e-28
    # velocity weighting divides the state error by the squared step
    off = lambda x, t0, t1: exact(x, t0, t1) + 0.1  # noqa: E731
    state = progressive_loss(off, exact, x, 0.0, 0.25, 0.5, weighting="state")
    assert torch.allclose(progressive_loss(off, exact, x, 0.0, 0.25, 0.5), state / 0.25, rtol=1e-12)


def _distil(student: HatField, teacher, teacher_steps: int, data: torch.Tensor, z: torch.Tensor) -> HatField:
    """One round: ``student`` (started from the previous round's weights) learns ``teacher``'s two steps."""
    triples = grid_triples(uniform(teacher_steps).double())
    rows = data.shape[0]
    t0, t1, t2 = (triples[:, i].repeat_interleave(rows) for i in range(3))
    x = renoise(data.repeat(len(triples), 1), z.repeat(len(triples), 1), t0)  # data re-noised to each t_2i
    optimiser = torch.optim.LBFGS(
        student.parameters(),
        lr=1,
        max_iter=200,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        loss = progressive_loss(euler_map(student), teacher, x, t0, t1, t2)
        loss.backward()
        return loss

    optimiser.step(closure)
    return student


def _progressive(teacher, start_steps: int, knots: int) -> HatField:
    g = torch.Generator().manual_seed(0)
    data, z = DATA.sample(512, g), noise(512, 3, g)
    student = HatField(3, knots)
    for teacher_steps, _ in ProgressiveSettings(start_steps=start_steps).rounds():
        student = _distil(student, teacher, teacher_steps, data, z)
        teacher = euler_map(copy.deepcopy(student).requires_grad_(False))  # the next round's teacher
    return student


def test_progressive_distillation_of_the_exact_flow_reaches_the_exact_map_in_one_step():
    """Rounds 8 -> 4 -> 2 -> 1 from the exact teacher: the 1-step student is x_1 = mean + std x_0."""
    student = _progressive(DATA.flow, start_steps=8, knots=8)
    z = noise(1000, 3, torch.Generator().manual_seed(1))
    one_step = euler_map(student)(z, 0.0, 1.0)
    assert (one_step - (DATA.mean + DATA.std * z)).abs().max() < 1e-6


def test_progressive_distillation_of_a_guided_euler_teacher_reaches_its_32_step_map():
    """Rounds 32 -> ... -> 1 from a guided Euler teacher (cfg 2 folded in): each round's one step is exactly
    the previous model's two, so the 1-step student (no guidance) is the teacher's 32-step guided solve."""
    cond, uncond = Gaussian([1.0, -0.5, 2.0], [0.5, 1.5, 0.8]), Gaussian([0.0, 0.5, 1.0], [1.0, 1.0, 1.2])
    velocity = guided(cond.velocity, uncond.velocity, 2.0)
    student = _progressive(euler_map(velocity), start_steps=32, knots=32)
    z = noise(1000, 3, torch.Generator().manual_seed(1))
    teacher_32 = integrate(velocity, z, uniform(32).double()).x
    assert (euler_map(student)(z, 0.0, 1.0) - teacher_32).abs().max() < 1e-6
