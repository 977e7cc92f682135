"""The few-step objectives on a CFM (:mod:`flowtts.train.fewstep.tts`) against independent references:
the model's own sampler, hand-written Euler steps and DMD directions, forward hooks, plain backprop."""

import copy

import pytest
import torch

from flowtts.train.data import MelDataset
from flowtts.train.fewstep import tts
from flowtts.train.fewstep.adversarial import AdversarialSettings, FeatureDiscriminator
from flowtts.train.fewstep.dmd import DMDSettings
from flowtts.train.fewstep.progressive import ProgressiveSettings
from flowtts.train.fewstep.run import FewStepConfig
from flowtts.train.prompts import draw_kind, solve, velocity_field_of
from train.helpers import prepared_corpus, random_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("fewstep_tts")), n=4)


def _batch(corpus, teacher, kind="prefix", rows=(0, 1)) -> tts.Batch:
    g = torch.Generator().manual_seed(11)
    prompts = draw_kind(MelDataset(corpus), list(rows), kind, teacher.num_channels, FewStepConfig("progressive"), g)
    return tts.Batch.of(prompts, "cpu")


def _perturbed(model, seed=3, std=0.02):
    """A copy of ``model`` with every weight moved a little (a student that is not the teacher)."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return out


def _mask3(batch):
    return batch.mask[..., None].float().expand_as(batch.data)


@pytest.mark.parametrize("kind", ["prefix", "unprompted"])
def test_the_field_solved_is_the_models_own_sampler(corpus, kind):
    teacher = random_model(corpus)
    batch = _batch(corpus, teacher, kind)
    grid = [0.0, 0.3, 0.55, 1.0]
    with torch.no_grad():
        ours = tts.solve(tts.field(teacher, batch), batch.noise, grid)
    kw = dict(cache=True, steps=len(grid) - 1, t_grid=grid, sway_sampling_coef=None)
    _, trajectory = solve(teacher, batch.prompts, cfg_strength=0, **kw)
    torch.testing.assert_close(ours, trajectory[-1], rtol=1e-5, atol=1e-5)
    guided = tts.solve(tts.frozen_field(teacher, batch, 2.0), batch.noise, grid)
    _, reference = solve(teacher, batch.prompts, cfg_strength=2.0, **kw)
    torch.testing.assert_close(guided, reference[-1], rtol=1e-5, atol=1e-5)
    assert not guided.requires_grad
    assert (guided - ours).abs().max() > 1e-3  # guidance is folded in, not dropped


@pytest.mark.parametrize("round_index", [0, 1])
def test_progressive_step_is_one_student_step_against_two_teacher_steps(corpus, round_index):
    teacher = random_model(corpus)
    student = _perturbed(teacher)
    batch = _batch(corpus, teacher)
    settings = ProgressiveSettings(start_steps=8, end_steps=2, steps_per_round=1, teacher_cfg=2.0)
    loss = tts.progressive_step(student, teacher, batch, settings, round_index, torch.Generator().manual_seed(4))

    n_teacher = (8, 4)[round_index]  # rounds (8 -> 4), (4 -> 2)
    i = int(torch.randint(n_teacher // 2, (), generator=torch.Generator().manual_seed(4)))
    t0, t1, t2 = (2 * i) / n_teacher, (2 * i + 1) / n_teacher, (2 * i + 2) / n_teacher
    cfg = 2.0 if round_index == 0 else 0.0
    with torch.no_grad():
        v_teacher = velocity_field_of(teacher, batch.prompts, cfg_strength=cfg)
        v_student = velocity_field_of(student, batch.prompts, cfg_strength=0.0)
        x = (1 - t0) * batch.noise + t0 * batch.data
        mid = x + (t1 - t0) * v_teacher(torch.tensor(t0), x)
        target = mid + (t2 - t1) * v_teacher(torch.tensor(t1), mid)
        one = x + (t2 - t0) * v_student(torch.tensor(t0), x)
    m = _mask3(batch)
    expected = (((one - target) ** 2) * m).sum() / m.sum() / (t2 - t0) ** 2
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=0)
    assert loss.requires_grad and float(loss.detach()) > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())  # the frozen teacher kept no graph


def _adversarial_grads(corpus, checkpoint: bool):
    teacher = random_model(corpus)
    student = _perturbed(teacher)
    teacher.requires_grad_(False)  # as the run freezes it: the generator's gradient runs through its features
    batch = _batch(corpus, teacher, rows=(1,))
    settings = AdversarialSettings(
        student_steps=3, grad_checkpoint=checkpoint, feature_layers=(0, -1), read_mel=True, r1_weight=0.1
    )
    torch.manual_seed(0)
    disc = FeatureDiscriminator(tts.feature_dims(teacher, settings), hidden=16, kernel_size=3)
    d_losses = []
    loss = tts.adversarial_step(
        student, teacher, disc, batch, settings, 0, torch.Generator().manual_seed(2), d_losses.append
    )
    loss.backward()
    return student, teacher, loss, d_losses


def test_adversarial_generator_gradient_reaches_the_student_and_checkpointing_keeps_it(corpus):
    student, teacher, loss, d_losses = _adversarial_grads(corpus, checkpoint=False)
    blocks = student.transformer.transformer_blocks
    for block in (blocks[0], blocks[-1]):
        grads = [p.grad for p in block.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert len(d_losses) == 1 and d_losses[0].requires_grad
    ckpt_student, _, ckpt_loss, _ = _adversarial_grads(corpus, checkpoint=True)
    torch.testing.assert_close(ckpt_loss, loss, rtol=1e-6, atol=1e-7)
    for (name, p), q in zip(student.named_parameters(), ckpt_student.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_the_adversarial_gradient_flows_through_every_solver_step(corpus):
    """The student's sample keeps the graph of all its steps back to its noise (a solve that cut the graph
    at any step would leave the noise without gradient)."""
    teacher = random_model(corpus).requires_grad_(False)
    batch = _batch(corpus, teacher)
    noise = batch.noise.clone().requires_grad_(True)
    batch.noise = noise
    settings = AdversarialSettings(student_steps=3, grad_checkpoint=True, distill_weight=1.0, warmup_steps=5)
    disc = FeatureDiscriminator(tts.feature_dims(teacher, settings), hidden=8)
    loss = tts.adversarial_step(teacher, teacher, disc, batch, settings, 0, torch.Generator().manual_seed(1), id)
    loss.backward()
    assert noise.grad is not None and float(noise.grad.abs().sum()) > 0


def test_teacher_features_are_the_named_blocks_outputs_and_differentiable(corpus):
    teacher = random_model(corpus)
    batch = _batch(corpus, teacher)
    blocks = teacher.transformer.transformer_blocks
    x = (0.6 * batch.noise + 0.4 * batch.data).requires_grad_(True)
    seen = {}
    handles = [
        b.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(i, out.detach()))
        for i, b in enumerate(blocks)
    ]
    try:
        with torch.no_grad():
            velocity_field_of(teacher, batch.prompts, cfg_strength=0.0)(torch.tensor(0.4), x)
    finally:
        for h in handles:
            h.remove()
    features = tts.teacher_features(teacher, batch, x, 0.4, (-1, 0))
    assert len(features) == 2
    torch.testing.assert_close(features[0], seen[len(blocks) - 1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(features[1], seen[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(features[0], features[1])
    assert all(not b._forward_hooks for b in blocks)  # its hooks are gone
    (features[0].pow(2).sum() + features[1].sum()).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="feature_layers"):
        tts.teacher_features(teacher, batch, x, 0.4, (len(blocks),))


def test_dmd_step_updates_the_fake_model_and_its_gradient_is_the_dmd_direction(corpus, monkeypatch):
    teacher = random_model(corpus)
    student, fake = _perturbed(teacher, seed=7), copy.deepcopy(teacher)
    batch = _batch(corpus, teacher)
    settings = DMDSettings(student_steps=2, sampler="ode", teacher_cfg=2.0, fake_updates_per_generator=3)
    teacher_before = copy.deepcopy(teacher.state_dict())
    fake_before = copy.deepcopy(fake.state_dict())
    optimiser = torch.optim.SGD(fake.parameters(), lr=0.05)
    updates = []

    def fake_update(loss):
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        updates.append(float(loss.detach()))

    samples = []
    original = tts.student_sample

    def leaf_sample(*args):  # the student's sample as a leaf, to read the loss's gradient in it
        samples.append(original(*args).detach().requires_grad_(True))
        return samples[-1]

    monkeypatch.setattr(tts, "student_sample", leaf_sample)
    loss = tts.dmd_step(student, fake, teacher, batch, settings, torch.Generator().manual_seed(5), fake_update)
    loss.backward()

    assert len(updates) == 3 and all(u > 0 for u in updates)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(v, fake_before[k]) for k, v in fake.state_dict().items())

    # the draws of dmd_step, in order: the step k, per fake update a time and a noise, the time, the noise
    g = torch.Generator().manual_seed(5)
    torch.randint(2, (), generator=g)
    for _ in range(3):
        torch.rand(1, generator=g), torch.randn(batch.noise.shape, generator=g)
    lo, hi = settings.time_range
    t = float(lo + (hi - lo) * torch.rand((), generator=g))
    noise = torch.randn(batch.noise.shape, generator=g)
    (x,) = samples
    with torch.no_grad():
        x_t = (1 - t) * noise + t * x
        real = x_t + (1 - t) * velocity_field_of(teacher, batch.prompts, cfg_strength=2.0)(torch.tensor(t), x_t)
        fake_x1 = x_t + (1 - t) * velocity_field_of(fake, batch.prompts, cfg_strength=0.0)(torch.tensor(t), x_t)
    m = _mask3(batch)
    scale = ((x.detach() - real).abs() * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    direction = (fake_x1 - real) / scale[:, None, None]
    expected = direction * m / m.sum()
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-9)
    assert float(x.grad.abs().sum()) > 0


def test_dmd_step_refuses_the_renoise_sampler(corpus):
    teacher = random_model(corpus)
    batch = _batch(corpus, teacher)
    with pytest.raises(ValueError, match="ODE sampler"):
        tts.dmd_step(teacher, teacher, teacher, batch, DMDSettings(), torch.Generator(), id)


@pytest.mark.parametrize("kind", ["prefix", "unprompted"])
def test_the_ctc_term_is_the_recognisers_loss_on_the_whole_utterance(corpus, kind):
    """DMD's CTC term equals the recogniser's loss on the mel a listener would get (recorded prompt frames,
    generated frames from the sample; an unprompted sample's empty first frame left out), and its gradient
    reaches the sample only on the generated frames."""
    from flowtts.eval.recognizer import load_recognizer

    recognizer = load_recognizer("builtin").requires_grad_(False)
    teacher = random_model(corpus)
    batch = _batch(corpus, teacher, kind)
    x = torch.randn(batch.data.shape, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    term = tts.ctc_term(recognizer, x, batch)
    p = batch.prompts
    expected = 0.0
    for i in range(x.shape[0]):
        n, lens = int(p.durations[i]), int(p.lens[i])
        whole = torch.cat([batch.data[i, :lens], x[i, lens:n]]).detach()
        start = 1 if kind == "unprompted" else 0
        loss, scored = recognizer.ctc_loss(whole[None, start:], None, [p.texts[i]])
        expected += float(loss[0]) * bool(scored[0])
    assert term.item() == pytest.approx(expected / x.shape[0], rel=1e-5)
    term.backward()
    prompt = torch.arange(x.shape[1])[None, :] < p.lens[:, None]
    assert float(x.grad[prompt].abs().sum()) == 0
    assert float(x.grad[batch.mask].abs().sum()) > 0
