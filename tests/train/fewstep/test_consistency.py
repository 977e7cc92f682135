import copy

import pytest
import torch

from flowtts.train.fewstep.consistency import ConsistencySettings, consistency_fn, consistency_loss, skip_times
from flowtts.train.fewstep.velocity import multistep_sample
from flowtts.train.loop import ema_update
from train.fewstep.gaussian import Gaussian, HatField, noise, single_thread  # noqa: F401 (autouse)

DATA = Gaussian([1.0, -0.5, 2.0], [0.5, 1.5, 0.8])


def test_the_boundary_condition_holds_exactly_by_construction():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()

    def raw(t, x):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        return 1e3 * net(torch.cat((x, t[:, None]), dim=1))  # a large, untrained network

    x = torch.randn(6, 3, dtype=torch.float64)
    assert torch.equal(consistency_fn(raw, x, 1.0), x)
    t = torch.tensor([1.0, 0.3, 1.0, 0.0, 0.9, 1.0], dtype=torch.float64)
    out = consistency_fn(raw, x, t)
    assert torch.equal(out[[0, 2, 5]], x[[0, 2, 5]])
    assert not torch.allclose(out[[1, 3, 4]], x[[1, 3, 4]])
    # the exact consistency function of the Gaussian problem is of this form: its F is the flow to t = 1 over 1 - t
    exact_raw = lambda t, x: (DATA.flow(x, t, 1.0) - x) / (1 - torch.as_tensor(t))  # noqa: E731
    assert torch.allclose(consistency_fn(exact_raw, x, 0.4), DATA.flow(x, 0.4, 1.0), atol=1e-14)


def test_skip_times_step_k_lattice_intervals_and_stop_at_one():
    t, t_next = skip_times(1000, 16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert set((t * 16).round().long().tolist()) == set(range(16))
    assert torch.allclose(t_next, (t + 4 / 16).clamp(max=1.0))
    with pytest.raises(ValueError):
        ConsistencySettings(intervals=8, skip=9)
    assert ConsistencySettings(sample_steps=4).sample_grid().tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_a_distilled_consistency_model_lands_on_the_data_in_one_and_two_steps():
    """Skipping-step targets from the exact teacher ODE and an EMA target network: a model linear in x with
    time features learns the consistency function, and its 1- and 2-step samples have the data's mean and std."""
    settings = ConsistencySettings(intervals=16, skip=4, target_decay=0.9)
    student = HatField(3, settings.intervals)
    target = copy.deepcopy(student).requires_grad_(False)
    optimiser = torch.optim.Adam(student.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x1, z = DATA.sample(256, g), noise(256, 3, g)
        t, t_next = skip_times(256, settings.intervals, settings.skip, generator=g, dtype=torch.float64)
        loss = consistency_loss(
            lambda x, t: consistency_fn(student, x, t),
            lambda x, t: consistency_fn(target, x, t),
            DATA.flow,  # the teacher's ODE from t to t'
            x1,
            z,
            t,
            t_next,
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        ema_update(target, student, settings.target_decay)

    def f(x, t):
        return consistency_fn(student, x, t)

    def exact(x, t):  # the ODE's endpoint: the consistency function it should have learnt
        return DATA.flow(x, t, 1.0)

    z = noise(100_000, 3, torch.Generator().manual_seed(1))
    for steps in (1, 2):
        grid = ConsistencySettings(sample_steps=steps).sample_grid().double()
        with torch.no_grad():
            out = multistep_sample(f, z, grid, generator=torch.Generator().manual_seed(2))
            reference = multistep_sample(exact, z, grid, generator=torch.Generator().manual_seed(2))
        # sample by sample (same noises) it is the exact consistency model's sample ...
        assert (out - reference).abs().max() < 1e-3, steps
        # ... whose mean and std are the data's (up to the Monte Carlo error of 1e5 samples, ~0.5 %)
        assert torch.allclose(out.mean(0), DATA.mean, atol=0.02), (steps, out.mean(0))
        assert torch.allclose(out.std(0), DATA.std, rtol=0.02), (steps, out.std(0))
