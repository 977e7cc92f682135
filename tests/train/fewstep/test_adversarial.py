import pytest
import torch
from torch import nn

from conftest import make_tiny, tiny_text
from flowtts.sampling import integrate, uniform
from flowtts.train.fewstep.adversarial import (
    D_LOSSES,
    G_LOSSES,
    AdversarialSettings,
    FeatureDiscriminator,
    distillation_loss,
    dit_features,
    hinge_d_loss,
    hinge_g_loss,
    ls_d_loss,
    ls_g_loss,
    r1_penalty,
    turn,
)
from flowtts.train.fewstep.velocity import predict_data, renoise
from train.fewstep.gaussian import HatField, single_thread  # noqa: F401 (autouse)


def test_gan_losses_have_their_known_values():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    assert torch.isclose(hinge_d_loss(real, fake), torch.tensor((0 + 0.5 + 2) / 3 + (0 + 1 + 2.5) / 3))
    assert torch.isclose(hinge_g_loss(fake), torch.tensor(0.5 / 3))
    assert torch.isclose(ls_d_loss(real, fake), torch.tensor((1 + 0.25 + 4) / 3 + (4 + 0 + 2.25) / 3))
    assert torch.isclose(ls_g_loss(fake), torch.tensor((9 + 1 + 0.25) / 3))
    assert D_LOSSES["hinge"] is hinge_d_loss and G_LOSSES["ls"] is ls_g_loss


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
    w = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64, requires_grad=True)
    real = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    logits = real @ w  # per-frame logits (6, 4): each sample's gradient is w at each of its 4 frames
    penalty = r1_penalty(logits, real)
    assert torch.isclose(penalty, 4 * (w.detach() ** 2).sum())
    penalty.backward()  # the penalty trains the discriminator: it has a graph
    assert torch.allclose(w.grad, 8 * w.detach())


def test_the_schedule_names_its_warmup_and_update_ratio():
    settings = AdversarialSettings(warmup_steps=2, d_updates_per_g=2)
    turns = [turn(s, settings) for s in range(5)]
    assert [t.generator for t in turns] == [True, False, True, False, True]
    assert [t.adversarial for t in turns] == [False, False, True, True, True]
    assert all(t.discriminator for t in turns)
    with pytest.raises(ValueError):
        AdversarialSettings(loss="wgan")


def test_the_discriminator_reads_frames_or_vectors_with_an_optional_conditioning():
    torch.manual_seed(0)
    d = FeatureDiscriminator([8, 3], hidden=16, kernel_size=3, cond_dim=5)
    logits = d([torch.randn(2, 7, 8), torch.randn(2, 7, 3)], cond=torch.randn(2, 7, 5))
    assert logits.shape == (2, 7)
    mlp = FeatureDiscriminator([4], hidden=8, kernel_size=1)
    assert mlp([torch.randn(5, 4)]).shape == (5,)
    with pytest.raises(ValueError, match="cond"):
        d([torch.randn(2, 7, 8), torch.randn(2, 7, 3)])


def test_dit_features_are_the_trunk_that_the_velocity_runs():
    model = make_tiny(torch.float64).requires_grad_(False)  # the frozen teacher
    dit = model.transformer
    cond, text = torch.randn(2, 9, 12, dtype=torch.float64), tiny_text(2)
    conditioning = dit.condition(cond, text, None)
    x, t = torch.randn(2, 9, 12, dtype=torch.float64, requires_grad=True), torch.tensor(0.3, dtype=torch.float64)
    first, last = dit_features(dit, x, t, conditioning, [0, -1])
    assert first.shape == last.shape == (2, 9, 32)
    out = dit.proj_out(dit.norm_out(last, dit.time_embed(t.repeat(2))))
    assert torch.allclose(out, dit.velocity(x, t, conditioning), atol=1e-13)
    head = FeatureDiscriminator([32, 32], hidden=8).double()
    hinge_g_loss(head([first, last])).backward()
    assert x.grad.abs().sum() > 0  # through the frozen teacher to the sample
    with pytest.raises(ValueError, match="one-branch"):
        dit_features(dit, x, t, dit.condition(cond, text, None, cfg_infer=True), [0])


class Student(nn.Module):
    """A nonlinear velocity with one bias per solver step (hat features on the grid's knots)."""

    def __init__(self, steps: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
        self.per_step = HatField(3, steps)

    def forward(self, t, x):
        tt = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0], 1)
        return self.net(torch.cat((x, tt), dim=1)) + self.per_step(t, x)


class Teacher(nn.Module):
    """A frozen velocity whose hidden layer is the discriminator's feature."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(4, 16), nn.Tanh())
        self.out = nn.Linear(16, 3)

    def features(self, t, x):
        tt = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0], 1)
        return self.hidden(torch.cat((x, tt), dim=1))

    def forward(self, t, x):
        return self.out(self.features(t, x))


STEPS = 4


@pytest.fixture(scope="module")
def game():
    torch.manual_seed(0)
    student, teacher = Student(STEPS).double(), Teacher().double().requires_grad_(False)
    with torch.no_grad():
        student.per_step.a.normal_(0, 0.3)
        student.per_step.b.normal_(0, 0.3)
    # the discriminator as the generator's turn sees it: frozen (its own turn trains it)
    head = FeatureDiscriminator([16, 3], hidden=8, kernel_size=1).double().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    z, n = (torch.randn(32, 3, generator=g, dtype=torch.float64) for _ in range(2))
    return student, teacher, head, z, n


def _generator_loss(game, grad: str, backprop_steps=None, frozen_target=None) -> torch.Tensor:
    """The generator's loss; with ``frozen_target`` the distillation target is that fixed tensor (the value
    whose derivative the stop-gradient target's autograd gradient is)."""
    student, teacher, head, z, n = game
    settings = AdversarialSettings(student_steps=STEPS)
    x = integrate(student, z, uniform(settings.student_steps).double(), grad=grad, backprop_steps=backprop_steps).x
    t = 0.6
    x_t = renoise(x, n, t)
    logits = head([teacher.features(t, x_t), x_t])  # the teacher's features and the re-noised sample itself
    if frozen_target is None:
        distill = distillation_loss(x, lambda x_t, t: predict_data(teacher, x_t, t), n, t)
    else:
        distill = (x - frozen_target).pow(2).mean()
    return G_LOSSES[settings.loss](logits) + settings.distill_weight * distill


def _grads(game, grad: str, backprop_steps=None) -> list[torch.Tensor]:
    student = game[0]
    student.zero_grad()
    with torch.enable_grad():
        _generator_loss(game, grad, backprop_steps).backward()
    return [p.grad.clone() for p in student.parameters()]


def test_the_generator_gradient_reaches_the_student_through_every_solver_step(game):
    student, teacher, head = game[:3]
    _grads(game, "full")
    per_step = student.per_step.b.grad.abs().sum(dim=1)
    assert bool((per_step[:STEPS] > 1e-6).all()), per_step  # each step's own bias: every step is in the graph
    assert float(per_step[STEPS]) == 0.0  # the grid's end, where no step starts
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in head.parameters())
    # a truncated graph reaches the last step only: the check above would catch a step left out
    _grads(game, "full", backprop_steps=1)
    truncated = student.per_step.b.grad.abs().sum(dim=1)
    assert float(truncated[: STEPS - 1].abs().sum()) == 0.0 and float(truncated[STEPS - 1]) > 0


def test_the_checkpointed_gradient_equals_plain_backprop(game):
    full, checkpointed = _grads(game, "full"), _grads(game, "checkpoint")
    for a, b in zip(full, checkpointed):
        assert (a - b).abs().max() <= 1e-12 * a.abs().max()


def test_the_generator_gradient_matches_finite_differences(game):
    student, teacher, _, z, n = game
    grads = dict(zip([name for name, _ in student.named_parameters()], _grads(game, "checkpoint")))
    with torch.no_grad():  # the distillation target where the gradient was taken (it is a stop-gradient there)
        x = integrate(student, z, uniform(STEPS).double()).x
        target = predict_data(teacher, renoise(x, n, 0.6), 0.6)
    h = 1e-6
    for name, index in [("per_step.b", (1, 2)), ("net.0.weight", (3, 1))]:
        param = dict(student.named_parameters())[name]
        with torch.no_grad():
            param[index] += h
            up = _generator_loss(game, "none", frozen_target=target)
            param[index] -= 2 * h
            down = _generator_loss(game, "none", frozen_target=target)
            param[index] += h
        numeric = (up - down) / (2 * h)
        assert torch.isclose(grads[name][index], numeric, rtol=1e-7, atol=1e-12), (name, grads[name][index], numeric)
