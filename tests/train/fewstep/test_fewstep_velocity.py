import pytest
import torch

from conftest import make_tiny, tiny_text
from flowtts.sampling import integrate, uniform
from flowtts.train.fewstep.velocity import (
    euler_map,
    guided,
    jump_to_data,
    model_step_map,
    multistep_sample,
    predict_data,
    renoise,
    solver_map,
    time_like,
)
from train.fewstep.gaussian import Gaussian, noise, single_thread  # noqa: F401 (autouse)

DATA = Gaussian([1.0, -0.5, 2.0], [0.5, 1.5, 0.8])


def test_the_oracle_is_right_its_velocity_solves_to_its_flow_map():
    z = noise(64, 3, torch.Generator().manual_seed(0))
    solved = integrate(DATA.velocity, z, uniform(2000).double(), method="midpoint").x
    assert torch.allclose(solved, DATA.mean + DATA.std * z, atol=1e-8)
    assert torch.allclose(DATA.flow(z, 0.0, 1.0), DATA.mean + DATA.std * z, atol=1e-14)
    x = DATA.flow(z, 0.0, 0.3)
    assert torch.allclose(predict_data(DATA.velocity, x, 0.3), DATA.predict(x, 0.3), atol=1e-14)
    assert torch.allclose(DATA.flow(x, 0.3, 1.0), DATA.flow(z, 0.0, 1.0), atol=1e-14)


def test_times_broadcast_per_sample_and_renoise_is_the_path():
    x1, z = torch.ones(4, 2, 3), torch.zeros(4, 2, 3)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert time_like(t, x1).shape == (4, 1, 1)
    assert torch.equal(renoise(x1, z, t)[:, 0, 0], t)
    with pytest.raises(ValueError, match="one per sample"):
        time_like(torch.zeros(3), x1)


def test_guidance_folds_into_one_velocity():
    cond, uncond = (lambda t, x: 3 * x), (lambda t, x: x)
    x = torch.tensor([2.0])
    assert guided(cond, uncond, 0.0) is cond
    assert torch.equal(guided(cond, uncond, 2.0)(0.0, x), 6 + 2 * (6 - 2) * torch.ones(1))


def test_euler_and_solver_maps_are_the_solvers_steps():
    z = noise(8, 3, torch.Generator().manual_seed(1))
    grid = uniform(4).double()
    x = z
    for t0, t1 in zip(grid, grid[1:]):
        x = euler_map(DATA.velocity)(x, t0, t1)
    assert torch.equal(x, integrate(DATA.velocity, z, grid).x)
    sub = solver_map(DATA.velocity, substeps=4)(z, 0.0, 1.0)
    assert torch.equal(sub, integrate(DATA.velocity, z, torch.linspace(0, 1, 5, dtype=torch.float64)).x)


def test_jump_to_data_is_the_identity_at_t_one():
    step = euler_map(lambda t, x: x * 1e6 + 3)  # whatever the model says
    x = torch.randn(5, 3, dtype=torch.float64)
    predict = jump_to_data(step)
    assert torch.equal(predict(x, 1.0), x)
    t = torch.tensor([0.2, 1.0, 0.5, 1.0, 0.0], dtype=torch.float64)
    out = predict(x, t)
    assert torch.equal(out[[1, 3]], x[[1, 3]])
    assert torch.equal(out[0], step(x[:1], 0.2, 1.0)[0])


def test_multistep_sampler_with_the_implied_noise_is_the_euler_solve():
    z = noise(16, 3, torch.Generator().manual_seed(2))
    grid = torch.tensor([0.0, 0.3, 0.6, 0.85, 1.0], dtype=torch.float64)
    predict = jump_to_data(euler_map(DATA.velocity))
    implied = multistep_sample(predict, z, grid, fresh_noise=False)
    assert torch.allclose(implied, integrate(DATA.velocity, z, grid).x, atol=1e-13)
    state = multistep_sample(predict, z, grid, upto=2, fresh_noise=False)
    assert torch.allclose(state, integrate(DATA.velocity, z, grid[:3]).x, atol=1e-13)
    # with fresh noise the exact consistency function (the flow map to t = 1) lands on the data at every step
    consistency = lambda x, t: DATA.flow(x, t, 1.0)  # noqa: E731
    z, g = noise(40000, 3, torch.Generator().manual_seed(3)), torch.Generator().manual_seed(4)
    for k in range(1, 4):
        x = multistep_sample(consistency, z, grid, upto=k, generator=g)
        assert torch.allclose(x.mean(0), grid[k] * DATA.mean, atol=0.03), k  # the path's marginal at grid[k]
    out = multistep_sample(consistency, z, grid, generator=g)
    assert torch.allclose(out.mean(0), DATA.mean, atol=0.03) and torch.allclose(out.std(0), DATA.std, rtol=0.02)


def test_a_models_step_map_composes_to_its_sample_trajectory():
    model = make_tiny(torch.float64)
    cond, text = torch.randn(2, 4, 12, dtype=torch.float64), tiny_text(2)
    x0 = torch.randn(2, 9, 12, dtype=torch.float64)
    grid = [0.0, 0.3, 0.7, 1.0]
    _, trajectory = model.sample(cond, text, 9, noise=x0, t_grid=grid, cfg_strength=2.0, isolate_batch=True)
    step = model_step_map(model, cond, text, 9, cfg_strength=2.0, cache=True, isolate_batch=True)
    x = x0
    for i, (t0, t1) in enumerate(zip(grid, grid[1:])):
        x = step(x, t0, t1)
        assert torch.allclose(x, trajectory[i + 1], atol=1e-12), i
    two = model_step_map(model, cond, text, 9, cfg_strength=2.0, cache=True, substeps=2, isolate_batch=True)
    mid = step(trajectory[1], 0.3, 0.5)
    assert torch.allclose(two(trajectory[1], 0.3, 0.7), step(mid, 0.5, 0.7), atol=1e-12)
    student = model_step_map(model, cond, text, 9, cfg_strength=0.0, cache=False, grad_checkpoint=True)
    x0.requires_grad_(True)
    student(x0, 0.25, 1.0).sum().backward()
    assert x0.grad.abs().sum() > 0 and model.transformer.proj_out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one time per call"):
        step(x0.detach(), torch.zeros(2), 1.0)
