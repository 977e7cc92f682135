import pytest
import torch

from flowtts.train.fewstep.dmd import (
    DMDSettings,
    backward_simulation,
    dmd_direction,
    dmd_generator_loss,
    dmd_loss,
    draw_times,
    fake_score_loss,
    generator_turn,
)
from flowtts.train.fewstep.velocity import euler_map, jump_to_data, multistep_sample, predict_data
from train.fewstep.gaussian import Gaussian, HatField, noise, single_thread  # noqa: F401 (autouse)

DATA = Gaussian([1.0, -0.5, 2.0], [0.5, 1.5, 0.8])


def test_the_loss_gradient_is_the_normalised_direction():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    real, fake = (
        torch.randn(4, 5, 3, generator=g, dtype=torch.float64),
        torch.randn(4, 5, 3, generator=g, dtype=torch.float64),
    )
    dmd_loss(x, real, fake).backward()
    scale = (x.detach() - real).abs().mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(x.grad, (fake - real) / scale / x.numel(), rtol=1e-12)
    # a frame mask restricts both the loss and the per-sample normaliser to the masked frames
    mask = torch.tensor([[True] * 3 + [False] * 2] * 4)
    x.grad = None
    dmd_loss(x, real, fake, mask).backward()
    scale = (x.detach() - real)[:, :3].abs().mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(x.grad[:, :3], (fake - real)[:, :3] / scale / (4 * 3 * 3), rtol=1e-12)
    assert torch.equal(x.grad[:, 3:], torch.zeros(4, 2, 3, dtype=torch.float64))
    assert torch.equal(dmd_direction(x, real, real), torch.zeros_like(x))


def test_the_generator_turns_and_settings():
    assert [generator_turn(s, 5) for s in range(6)] == [True, False, False, False, False, True]
    with pytest.raises(ValueError):
        DMDSettings(sampler="sde")
    t = draw_times(1000, (0.02, 0.98), generator=torch.Generator().manual_seed(0))
    assert 0.02 <= float(t.min()) and float(t.max()) <= 0.98


def test_backward_simulation_is_the_students_own_sampler():
    z = noise(8, 3, torch.Generator().manual_seed(0))
    grid = DMDSettings(student_steps=4).student_grid().double()
    predict = jump_to_data(euler_map(DATA.velocity))
    ode = backward_simulation(predict, z, grid, 3, sampler="ode")
    assert torch.allclose(ode, multistep_sample(predict, z, grid, upto=3, fresh_noise=False))
    renoised = backward_simulation(predict, z, grid, 2, generator=torch.Generator().manual_seed(1))
    again = multistep_sample(predict, z, grid, upto=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(renoised, again) and not renoised.requires_grad
    assert torch.equal(backward_simulation(predict, z, grid, 0), z)


def _generator():
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    return a, b


def test_dmd_with_the_exact_fake_velocity_moves_the_generator_to_the_data():
    """G(z) = a z + b; the fake velocity is the exact one of G's current Gaussian N(b, a^2)."""
    a, b = _generator()
    optimiser = torch.optim.Adam([a, b], lr=0.02)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x = a * noise(512, 3, g) + b
        fake = Gaussian(b.detach().clone(), a.detach().abs().clone())
        t = draw_times(512, (0.02, 0.98), generator=g, dtype=torch.float64)
        loss = dmd_generator_loss(x, DATA.predict, fake.predict, noise(512, 3, g), t)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert torch.allclose(b.detach(), DATA.mean, atol=0.005), b
    assert torch.allclose(a.detach(), DATA.std, rtol=0.01), a  # from a = 1 it keeps the sign


def test_dmd_with_a_fake_velocity_learnt_online_moves_the_generator_to_the_data():
    """The fake model starts as the teacher and learns G's distribution by flow matching on G's samples,
    five updates per generator update (the generator's rate decays linearly, as in the training loop);
    the real velocity is the data's. Times on the fake model's knots, where it can be exact."""
    a, b = _generator()
    fake = HatField(3, 16).set_to(DATA)
    settings = DMDSettings(fake_updates_per_generator=5)
    steps = 1500
    g_opt = torch.optim.Adam([a, b], lr=0.04)
    decay = torch.optim.lr_scheduler.LambdaLR(g_opt, lambda s: 1 - s / (steps // settings.fake_updates_per_generator))
    f_opt = torch.optim.Adam(fake.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)

    def knot_times(n):
        return torch.randint(1, 16, (n,), generator=gen).double() / 16

    for step in range(steps):
        x = a * noise(512, 3, gen) + b
        if generator_turn(step, settings.fake_updates_per_generator):
            loss = dmd_generator_loss(
                x, DATA.predict, lambda x_t, t: predict_data(fake, x_t, t), noise(512, 3, gen), knot_times(512)
            )
            g_opt.zero_grad()
            loss.backward()
            g_opt.step()
            decay.step()
        fake_loss = fake_score_loss(fake, x, noise(512, 3, gen), knot_times(512))
        f_opt.zero_grad()
        fake_loss.backward()
        f_opt.step()
    assert torch.allclose(b.detach(), DATA.mean, atol=0.03), b
    assert torch.allclose(a.detach().abs(), DATA.std, rtol=0.05), a
