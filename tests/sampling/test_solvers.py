import pytest
import torch
from torch import nn

from flowtts.sampling import integrate, uniform
from flowtts.sampling.solvers import ODESolution
from upstream import has_module, needs_upstream


class Linear(nn.Module):
    """v(t, x) = a x: closed form x(1) = x0 exp(a)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t, x):
        return self.a * x


class MLPField(nn.Module):
    """A velocity with parameters, time input and dropout."""

    def __init__(self, dim=6, dropout=0.3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, 32), nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, dim))

    def forward(self, t, x):
        tt = t.expand(*x.shape[:-1], 1).to(x.dtype)
        return self.net(torch.cat((x, tt), dim=-1))


@pytest.mark.parametrize("steps", [1, 4, 16])
def test_euler_matches_discrete_closed_form_and_its_gradient(steps):
    field = Linear(0.7)
    x0 = torch.tensor([1.5, -2.0], dtype=torch.float64)
    sol = integrate(field, x0, uniform(steps).double(), method="euler", grad="full")
    factor = 1 + 0.7 / steps
    assert torch.allclose(sol.x, x0 * factor**steps, rtol=1e-12)
    sol.x.sum().backward()
    expected = (x0 * factor ** (steps - 1)).sum()
    assert torch.allclose(field.a.grad, expected, rtol=1e-12)


def test_midpoint_converges_to_exp_solution_and_gradient():
    a = 0.7
    field = Linear(a)
    x0 = torch.tensor([1.5, -2.0], dtype=torch.float64)
    steps = 400
    sol = integrate(field, x0, uniform(steps).double(), method="midpoint", grad="full")
    h = 1 / steps
    g = 1 + a * h + (a * h) ** 2 / 2
    assert torch.allclose(sol.x, x0 * g**steps, rtol=1e-12)
    assert torch.allclose(sol.x, x0 * torch.exp(torch.tensor(a, dtype=torch.float64)), rtol=1e-6)
    sol.x.sum().backward()
    # d/da of x0 exp(a) is x0 exp(a): the analytic gradient of the continuous solution.
    assert torch.allclose(field.a.grad, (x0 * torch.exp(torch.tensor(a, dtype=torch.float64))).sum(), rtol=1e-5)


def test_time_dependent_field_is_exact_under_midpoint():
    x0 = torch.zeros(3, dtype=torch.float64)
    sol = integrate(lambda t, x: 3 * t**2 * torch.ones_like(x), x0, uniform(1000).double(), method="midpoint")
    assert torch.allclose(sol.x, torch.ones(3, dtype=torch.float64), atol=1e-6)


@needs_upstream(has_module("torchdiffeq"), "torchdiffeq")
@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_matches_torchdiffeq_fixed_grid_exactly(method):
    from torchdiffeq import odeint

    torch.manual_seed(0)
    field = MLPField(dropout=0.0).eval()
    x0 = torch.randn(5, 6)
    grid = torch.tensor([0.0, 0.1, 0.15, 0.4, 0.8, 1.0])
    with torch.no_grad():
        ref = odeint(field, x0, grid, method=method)
    sol = integrate(field, x0, grid, method=method, return_trajectory=True)
    assert torch.equal(sol.trajectory, ref)


def _grads(model, x0, **kwargs):
    model.zero_grad()
    x0 = x0.clone().requires_grad_(True)
    torch.manual_seed(123)  # same dropout masks for every mode
    sol = integrate(model, x0, uniform(8).to(x0.dtype), **kwargs)
    (sol.x**2).sum().backward()
    return [p.grad.clone() for p in model.parameters()] + [x0.grad], sol.x.detach()


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_checkpoint_gradients_equal_plain_backprop_float64(train, method):
    torch.manual_seed(0)
    model = MLPField().double().train(train)
    x0 = torch.randn(4, 6, dtype=torch.float64)
    full, out_full = _grads(model, x0, method=method, grad="full")
    ckpt, out_ckpt = _grads(model, x0, method=method, grad="checkpoint")
    assert torch.equal(out_full, out_ckpt)
    for a, b in zip(full, ckpt):
        assert (a - b).abs().max() <= 1e-10 * a.abs().max()
    if train:  # dropout really was active: eval mode gives other gradients
        evalg, _ = _grads(model.eval(), x0, method=method, grad="full")
        assert not torch.allclose(evalg[0], full[0])


def test_checkpoint_gradients_equal_plain_backprop_float32():
    torch.manual_seed(0)
    model = MLPField().train()
    x0 = torch.randn(4, 6)
    full, _ = _grads(model, x0, grad="full")
    ckpt, _ = _grads(model, x0, grad="checkpoint")
    for a, b in zip(full, ckpt):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


@pytest.mark.parametrize("grad", ["full", "checkpoint"])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_last_k_equals_backprop_with_first_steps_detached(grad, k):
    torch.manual_seed(0)
    model = MLPField(dropout=0.0).double()
    x0 = torch.randn(4, 6, dtype=torch.float64)
    grid = uniform(8).double()

    model.zero_grad()
    sol = integrate(model, x0, grid, grad=grad, backprop_steps=k)
    (sol.x**2).sum().backward()
    truncated = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    head = x0 if k == 8 else integrate(model, x0, grid[: 8 - k + 1], grad="full").x.detach()
    tail = integrate(model, head, grid[8 - k :], grad="full").x
    (tail**2).sum().backward()
    reference = [p.grad.clone() for p in model.parameters()]

    assert torch.allclose(sol.x, tail, rtol=0, atol=1e-12)
    for a, b in zip(truncated, reference):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_gradient_reaches_initial_state_only_through_graph_steps():
    model = MLPField(dropout=0.0).double()
    x0 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    sol = integrate(model, x0, uniform(4).double(), grad="checkpoint")
    sol.x.sum().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
    x1 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    sol = integrate(model, x1, uniform(4).double(), grad="full", backprop_steps=2)
    assert sol.x.grad_fn is not None
    sol.x.sum().backward()
    assert x1.grad is None


def test_none_mode_builds_no_graph_and_restores_grad_mode():
    model = MLPField()
    with torch.enable_grad():
        sol = integrate(model, torch.randn(2, 6), uniform(3))
        assert sol.x.grad_fn is None and torch.is_grad_enabled()
    with torch.no_grad():
        sol = integrate(model, torch.randn(2, 6), uniform(3), grad="full")
        assert sol.x.grad_fn is not None and not torch.is_grad_enabled()


def test_grad_mode_restored_when_velocity_raises():
    calls = []

    def failing(t, x):
        calls.append(t)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return x

    with torch.no_grad():
        with pytest.raises(RuntimeError, match="boom"):
            integrate(failing, torch.ones(2), uniform(4), grad="full")
        assert not torch.is_grad_enabled()


def test_trajectory_holds_every_grid_state():
    sol = integrate(lambda t, x: torch.ones_like(x), torch.zeros(3), uniform(4), return_trajectory=True)
    assert isinstance(sol, ODESolution)
    assert sol.trajectory.shape == (5, 3)
    assert torch.allclose(sol.trajectory[:, 0], torch.linspace(0, 1, 5))
    assert integrate(lambda t, x: x, torch.zeros(3), uniform(2)).trajectory is None


def test_reduced_precision_velocity_does_not_lower_the_state_dtype():
    sol = integrate(lambda t, x: x.to(torch.bfloat16), torch.ones(3), uniform(2))
    assert sol.x.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="rk4"), "method"),
        (dict(grad="adjoint"), "grad"),
        (dict(grad="full", backprop_steps=0), "backprop_steps"),
        (dict(grad="full", backprop_steps=5), "backprop_steps"),
        (dict(grad="none", backprop_steps=2), "backprop_steps"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        integrate(lambda t, x: x, torch.zeros(2), uniform(4), **kwargs)


def test_bad_grid_is_rejected():
    with pytest.raises(ValueError, match="grid"):
        integrate(lambda t, x: x, torch.zeros(2), torch.tensor([0.0]))


class Guided(nn.Module):
    """CFG-shaped velocity: two branches of one network, combined linearly."""

    def __init__(self, dropout=0.3):
        super().__init__()
        self.cond, self.uncond = MLPField(dropout=dropout), MLPField(dropout=dropout)

    def split(self, fused: bool):
        from flowtts.sampling import SplitVelocity

        def combine(outs):
            return outs[0] + 2.0 * (outs[0] - outs[1])

        joint = (lambda t, x: combine([self.cond(t, x), self.uncond(t, x)])) if fused else None
        return SplitVelocity(parts=(self.cond, self.uncond), combine=combine, joint=joint)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_split_velocity_checkpoints_part_by_part_with_plain_gradients(train, method):
    torch.manual_seed(0)
    model = Guided().double().train(train)
    x0 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    results = {}
    for grad in ("full", "checkpoint"):
        model.zero_grad()
        x0.grad = None
        torch.manual_seed(5)
        sol = integrate(model.split(fused=not train), x0, uniform(6).double(), method=method, grad=grad)
        (sol.x**2).sum().backward()
        results[grad] = (sol.x.detach(), [p.grad.clone() for p in model.parameters()] + [x0.grad.clone()])
    assert torch.equal(results["full"][0], results["checkpoint"][0])
    for a, b in zip(results["full"][1], results["checkpoint"][1]):
        assert (a - b).abs().max() <= 1e-10 * a.abs().max()


def test_split_checkpoint_saves_only_states():
    model = Guided(dropout=0.0).double()
    x0 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        integrate(model.split(fused=True), x0, uniform(8).double(), grad="checkpoint")
    params = {p.numel() for p in model.parameters()}
    hidden = [n for n in sizes if n not in params and n > x0.numel()]
    assert not hidden, hidden  # no hidden activation (4 x 32) was kept, only states and scalars
