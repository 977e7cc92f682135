"""The ``cache`` contract of ``CFM.sample`` and its bad-input behaviour."""

import copy
import threading

import pytest
import torch
from torch import nn

from conftest import RecomputingBackbone, make_tiny, tiny_text

D = 12  # mel channels of the tiny model


def _prompt(b=1, n=10, seed=0, dtype=torch.float32):
    return torch.randn(b, n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _sample(model, b=1, cache=True, **kwargs):
    kwargs = {"steps": 4, "cfg_strength": 2.0, "sway_sampling_coef": -1.0, "seed": 7, **kwargs}
    return model.sample(_prompt(b, dtype=model.dtype), tiny_text(b), 24, cache=cache, **kwargs)


# ----------------------------------------------------------------- cache=True


def test_default_path_is_no_grad_not_inference_mode_and_sets_eval(tiny):
    tiny.train()
    with torch.enable_grad():
        out, trajectory = _sample(tiny)
        assert torch.is_grad_enabled()
    assert out.grad_fn is None and not out.requires_grad
    assert not out.is_inference()
    assert not tiny.training  # F5-TTS calls self.eval()
    assert out.shape == (1, 24, D) and trajectory.shape == (5, 1, 24, D)
    # usable as a regression target in a later graph
    student = nn.Parameter(torch.zeros_like(out))
    nn.functional.mse_loss(student, out).backward()
    assert student.grad is not None


def test_prompt_frames_are_copied_and_generated_frames_are_not_noise(tiny):
    out, trajectory = _sample(tiny)
    assert torch.equal(out[:, :10], _prompt())
    assert torch.equal(out[:, 10:], trajectory[-1][:, 10:])
    assert (trajectory[-1] - trajectory[0]).abs().mean() > 0.1


# ----------------------------------------------------------------- cache=False


def _sample_grads(model, **kwargs):
    torch.manual_seed(11)  # dropout draws
    model.zero_grad(set_to_none=True)
    out, _ = _sample(model, b=2, cache=False, **kwargs)
    (out**2).sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_grad_checkpoint_equals_plain_backprop_through_the_dit(train, cfg):
    # With guidance the checkpoint mode recomputes the two branches one at a time (SplitVelocity).
    model = make_tiny(torch.float64, dropout=0.2 if train else 0.0).train(train)
    plain_out, plain = _sample_grads(model, cfg_strength=cfg)
    ckpt_out, ckpt = _sample_grads(model, cfg_strength=cfg, grad_checkpoint=True)
    assert torch.equal(plain_out, ckpt_out) or (plain_out - ckpt_out).abs().max() < 1e-12
    for a, b in zip(plain, ckpt):
        assert (a - b).abs().max() <= 1e-10 * a.abs().max()
    last2_plain = _sample_grads(model, cfg_strength=cfg, backprop_steps=2)[1]
    last2_ckpt = _sample_grads(model, cfg_strength=cfg, backprop_steps=2, grad_checkpoint=True)[1]
    for a, b in zip(last2_plain, last2_ckpt):
        assert (a - b).abs().max() <= 1e-10 * a.abs().max()
    assert any(not torch.allclose(a, c) for a, c in zip(last2_plain, plain))  # truncation changed something


def test_guided_branches_one_at_a_time_equal_the_fused_batch():
    from flowtts.sampling import SplitVelocity

    model = make_tiny(torch.float64).eval()
    cond = torch.nn.functional.pad(_prompt(2, dtype=torch.float64), (0, 0, 0, 14))
    velocity = model._velocity(cond, tiny_text(2), None, 2.0, False)
    assert isinstance(velocity, SplitVelocity) and velocity.joint is not None
    x, t = torch.randn(2, 24, D, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    fused = velocity(t, x)
    branches = velocity.combine([part(t, x) for part in velocity.parts])
    assert (fused - branches).abs().max() < 1e-12
    assert (fused - velocity.parts[0](t, x)).abs().max() > 1e-3  # guidance does something
    with_dropout = make_tiny(torch.float64, dropout=0.2).train()
    assert with_dropout._velocity(cond, tiny_text(2), None, 2.0, False).joint is None


@pytest.mark.parametrize("cfg", [0.0, 1.0, 2.0])
def test_both_paths_give_the_same_numbers(cfg):
    model = make_tiny()
    a, _ = _sample(model, cfg_strength=cfg)
    b, _ = _sample(model.eval(), cache=False, cfg_strength=cfg)
    assert b.grad_fn is not None
    assert torch.allclose(a, b.detach(), atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_differentiable_path_keeps_train_eval_mode_and_reaches_all_parameters(training):
    model = make_tiny(dropout=0.1).train(training)
    with torch.no_grad():
        out, _ = _sample(model, cache=False)
        assert not torch.is_grad_enabled()
    assert model.training == training
    assert all(m.training == training for m in model.modules())
    out[:, 10:].pow(2).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []  # text embedding, ConvNeXt, every block, output layers


def test_dropout_is_active_in_train_mode_only():
    model = make_tiny(dropout=0.3)
    model.train()
    a, _ = _sample(model, cache=False)
    b, _ = _sample(model, cache=False)
    assert not torch.allclose(a, b)
    model.eval()
    c, _ = _sample(model, cache=False)
    d, _ = _sample(model, cache=False)
    assert torch.equal(c, d)


def test_text_conditioning_reuse_gives_the_gradients_of_recomputing_it_every_step():
    model = make_tiny(dtype=torch.float64).eval()
    reference = copy.deepcopy(model)
    reference.transformer = RecomputingBackbone(reference.transformer)
    grads = []
    for m in (model, reference):
        out, _ = _sample(m, cache=False)
        out.pow(2).sum().backward()
        grads.append({n.replace("transformer.net.", "transformer."): p.grad for n, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-10, atol=1e-12), name
    assert grads[0]["transformer.text_embed.text_embed.weight"].abs().sum() > 0


# ----------------------------------------------------------------- velocity field


def _field_inputs(dtype=torch.float32):
    return _prompt(2, dtype=dtype), tiny_text(2), torch.tensor([24, 20])


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_velocity_field_is_the_samplers_per_step_velocity(dtype):
    from flowtts.sampling.grids import make_grid

    model = make_tiny().eval()
    cond, text, duration = _field_inputs()
    guidance = dict(cfg_strength=2.0, dtype=dtype)
    out, trajectory = model.sample(cond, text, duration, steps=4, sway_sampling_coef=-1.0, seed=7, **guidance)
    grid = make_grid(4, use_epss=True, sway_coef=-1.0).to(torch.float32)
    with torch.no_grad():
        field = model.velocity_field(cond, text, duration, **guidance)
        for i in range(4):  # each Euler step of sample() is one call of the field, to the bit
            x = trajectory[i]
            assert torch.equal(x + (grid[i + 1] - grid[i]) * field(grid[i], x).float(), trajectory[i + 1])
    assert torch.equal(field.with_prompt(trajectory[-1]), out)
    assert field.cond.shape == (2, 24, D) and field.state_dtype == torch.float32


def test_velocity_field_is_upstreams_guided_velocity():
    from flowtts.model.cfm import lens_to_mask

    model = make_tiny(torch.float64).eval()
    cond, text, duration = _field_inputs(torch.float64)
    x, t = torch.randn(2, 24, D, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    with torch.no_grad():
        field = model.velocity_field(cond, text, duration, cfg_strength=2.0)
        # F5-TTS's step: both branches through forward(), then v_c + cfg (v_c - v_u)
        step_cond = torch.nn.functional.pad(cond, (0, 0, 0, 14))
        both = model.transformer(x=x, cond=step_cond, text=text, time=t, mask=lens_to_mask(duration), cfg_infer=True)
        pred, null_pred = both.chunk(2)
        assert torch.allclose(field(t, x), pred + (pred - null_pred) * 2.0, rtol=1e-10, atol=1e-12)
    assert field.cond_mask[:, :10].all() and not field.cond_mask[:, 10:].any()


@pytest.mark.parametrize("method", ["euler", "midpoint"])
@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_a_segment_through_the_field_equals_sample_on_its_grid(method, cfg):
    """Distillation's one-step segments: the field's step equals ``sample(t_grid=(t0, t1))`` to the bit."""
    model = make_tiny(dropout=0.2).train()  # a student: dropout active, the branches run one at a time
    model.odeint_kwargs = {"method": method}
    cond, text, duration = _field_inputs()
    state = torch.randn(2, 24, D, generator=torch.Generator().manual_seed(3))
    segment, kwargs = (0.25, 0.5), dict(lens=torch.tensor([10, 8]), cfg_strength=cfg, isolate_batch=True)
    results = []
    for through_field in (False, True):
        torch.manual_seed(5)  # dropout draws
        model.zero_grad(set_to_none=True)
        if through_field:
            field = model.velocity_field(cond, text, duration, **kwargs)
            last = field.solve(state, segment).x
            out = field.with_prompt(last)
        else:
            out, trajectory = model.sample(cond, text, duration, noise=state, t_grid=segment, cache=False, **kwargs)
            last = trajectory[-1]
        out.pow(2).sum().backward()
        results.append((out, last, [p.grad for p in model.parameters()]))
    (out_a, last_a, grads_a), (out_b, last_b, grads_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(last_a, last_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    with torch.no_grad():  # a rollout (the student's own states): same numbers, no graph
        torch.manual_seed(5)
        rolled = model.velocity_field(cond, text, duration, **kwargs).solve(state, segment).x
    assert torch.equal(rolled, last_b.detach()) and rolled.grad_fn is None


def test_velocity_field_checks_its_arguments(tiny):
    cond, text, duration = _field_inputs()
    with pytest.raises(ValueError, match="cfg_strength"):
        tiny.velocity_field(cond, text, duration, cfg_strength=-1.0)
    with pytest.raises(ValueError, match="max_duration"):
        tiny.velocity_field(cond, text, duration, max_duration=1)
    with pytest.raises(ValueError, match="lens"):
        tiny.velocity_field(cond, text, duration, lens=torch.tensor([11, 3]))


def test_attributes_set_from_outside_are_declared(tiny):
    names = ("config", "metadata", "preset", "quantized", "checkpoint_format")
    assert set(names) <= set(type(tiny).__annotations__)
    assert all(getattr(tiny, name) is None for name in names)  # built from the constructor: none set


def _loss(model, cond, noise, weights):
    out, _ = model.sample(
        cond, tiny_text(1), 20, steps=3, cfg_strength=2.0, sway_sampling_coef=-1.0, noise=noise, cache=False
    )
    return (out * weights).sum()


def test_finite_differences_float64_parameters_cond_and_noise():
    model = make_tiny(dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(3)
    cond = torch.randn(1, 8, D, generator=g, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(1, 20, D, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, 20, D, generator=g, dtype=torch.float64)
    params = [p for p in model.parameters()]
    loss = _loss(model, cond, noise, weights)
    grads = torch.autograd.grad(loss, params + [cond, noise])
    directions = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params + [cond, noise]]

    def directional(which):
        eps = 1e-6
        with torch.no_grad():
            values = []
            for sign in (1, -1):
                for p, d in zip(which, directions_of[id(which[0])]):
                    p.add_(sign * eps * d)
                values.append(_loss(model, cond, noise, weights).item())
                for p, d in zip(which, directions_of[id(which[0])]):
                    p.sub_(sign * eps * d)
        return (values[0] - values[1]) / (2 * eps)

    directions_of = {id(params[0]): directions[:-2], id(cond): [directions[-2]], id(noise): [directions[-1]]}
    grad_of = {id(params[0]): grads[:-2], id(cond): [grads[-2]], id(noise): [grads[-1]]}
    for which in (params, [cond], [noise]):
        autograd = sum((gr * d).sum() for gr, d in zip(grad_of[id(which[0])], directions_of[id(which[0])]))
        numeric = directional(which)
        assert abs(numeric - autograd.item()) <= 1e-4 * abs(numeric), (numeric, autograd.item())
    assert grads[-2].abs().sum() > 0 and grads[-1].abs().sum() > 0


def test_finite_differences_float64_solver_times():
    # the differentiable path also differentiates with respect to an explicit time grid (learned schedules)
    model = make_tiny(dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(4)
    cond = torch.randn(1, 8, D, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 20, D, generator=g, dtype=torch.float64)
    weights = torch.randn(1, 20, D, generator=g, dtype=torch.float64)

    def loss(times):
        kwargs = dict(steps=3, cfg_strength=2.0, sway_sampling_coef=None, noise=noise, t_grid=times, cache=False)
        return (model.sample(cond, tiny_text(1), 20, **kwargs)[0] * weights).sum()

    times = torch.tensor([0.0, 0.1, 0.45, 1.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(times), times)
    eps = 1e-6
    for i in (1, 2):  # the interior times (the ends stay 0 and 1)
        with torch.no_grad():
            step = torch.zeros(4, dtype=torch.float64)
            step[i] = eps
            numeric = (loss(times + step) - loss(times - step)).item() / (2 * eps)
        assert abs(numeric - grad[i].item()) <= 1e-5 * max(1.0, abs(numeric)), (i, numeric, grad[i].item())
    assert grad[1:3].abs().min() > 0
    with torch.no_grad():  # the fast path takes the same tensor and builds no graph
        out, _ = model.sample(cond, tiny_text(1), 20, sway_sampling_coef=None, noise=noise, t_grid=times)
    assert out.grad_fn is None


# ----------------------------------------------------------------- no hidden state


def _module_state(model: nn.Module) -> dict:
    """Everything a module tree holds: per submodule every attribute (private ones included), parameter and
    buffer values, gradients and ``requires_grad``, child identities, hook and buffer-name registries."""
    state = {}
    for name, module in model.named_modules(remove_duplicate=False):
        state[(name, "type")] = type(module)
        for key, value in vars(module).items():
            if key in ("_parameters", "_buffers"):
                for k, v in value.items():
                    grad = None if v is None or v.grad is None else v.grad.clone()
                    state[(name, key, k)] = None if v is None else (v.detach().clone(), v.requires_grad, grad)
            elif key == "_modules":
                state[(name, key)] = [(k, id(v)) for k, v in value.items()]
            elif isinstance(value, (dict, set)):  # hooks and pre-hooks, non-persistent buffer names
                state[(name, key)] = sorted(map(str, value.items() if isinstance(value, dict) else value))
            elif torch.is_tensor(value):
                state[(name, key)] = (value.detach().clone(), id(value))
            else:
                state[(name, key)] = value
    return state


def _same(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _assert_same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys(), set(before) ^ set(after)
    for key, value in before.items():
        assert _same(value, after[key]), key


def test_the_state_check_sees_private_attributes_hooks_and_values(tiny):
    before = _module_state(tiny)
    tiny.transformer._cached_text = torch.zeros(3)  # a private attribute left behind
    assert _module_state(tiny).keys() != before.keys()
    del tiny.transformer._cached_text
    handle = tiny.transformer.register_forward_hook(lambda *args: None)
    with pytest.raises(AssertionError):
        _assert_same_state(before, _module_state(tiny))
    handle.remove()
    with torch.no_grad():
        next(tiny.parameters()).add_(1e-3)
    with pytest.raises(AssertionError):
        _assert_same_state(before, _module_state(tiny))


def test_no_state_on_the_module_deepcopy_and_threads(tiny):
    tiny.eval()
    before = _module_state(tiny)
    texts = [tiny_text(2)[:1], tiny_text(2)[1:]]
    singles = [tiny.sample(_prompt(), t, 24, steps=4, cfg_strength=2.0, seed=1)[0] for t in texts]
    _assert_same_state(before, _module_state(tiny))  # the fast path leaves nothing behind
    slow, _ = tiny.sample(_prompt(), texts[0], 24, steps=4, cfg_strength=2.0, seed=1, cache=False)
    assert torch.allclose(slow, singles[0], atol=1e-5)
    _assert_same_state(before, _module_state(tiny))  # nor does the differentiable one (before backward)
    clone = copy.deepcopy(tiny)
    assert torch.equal(clone.sample(_prompt(), texts[0], 24, steps=4, cfg_strength=2.0, seed=1)[0], singles[0])

    results = {}

    def work(i):
        for _ in range(3):
            results.setdefault(i, []).append(tiny.sample(_prompt(), texts[i], 24, steps=4, cfg_strength=2.0, seed=1)[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in range(2):
        for r in results[i]:
            assert torch.equal(r, singles[i])
    assert not torch.equal(singles[0], singles[1])


# ----------------------------------------------------------------- seeds and batches


def test_seeded_noise_is_upstreams_and_leaves_the_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    _, trajectory = tiny.sample(_prompt(2), tiny_text(2), torch.tensor([24, 18]), steps=2, seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)
    for i, frames in enumerate([24, 18]):
        torch.manual_seed(11)
        assert torch.equal(trajectory[0, i, :frames], torch.randn(frames, D))
    assert torch.count_nonzero(trajectory[0, 1, 18:]) == 0
    _, per_sample = tiny.sample(_prompt(2), tiny_text(2), 24, steps=2, seed=[11, 12])
    torch.manual_seed(12)
    assert torch.equal(per_sample[0, 1], torch.randn(24, D))


def test_durations_are_clamped_as_upstream(tiny):
    text = torch.full((1, 30), 3)
    out, _ = tiny.sample(_prompt(), text, 5, steps=1)
    assert out.shape[1] == 31  # at least text length + 1
    out, _ = tiny.sample(_prompt(n=12), tiny_text(1), 5, steps=1)
    assert out.shape[1] == 13  # at least prompt length + 1
    out, _ = tiny.sample(_prompt(), tiny_text(1), 500, steps=1, max_duration=40)
    assert out.shape[1] == 40


@pytest.mark.parametrize("cache", [True, False])
def test_batch_of_different_lengths_matches_single_calls_when_isolated(cache):
    model = make_tiny().eval()
    cond = _prompt(3)
    lens = torch.tensor([10, 6, 8])
    durations = torch.tensor([24, 30, 17])
    text = tiny_text(3)
    batched, _ = model.sample(
        cond, text, durations, lens=lens, steps=4, cfg_strength=2.0, seed=[1, 2, 3], isolate_batch=True, cache=cache
    )
    assert batched.shape == (3, 30, D)
    loose, _ = model.sample(cond, text, durations, lens=lens, steps=4, cfg_strength=2.0, seed=[1, 2, 3])
    loose_gaps = []
    for i in range(3):
        row = text[i : i + 1]
        row = row[:, : int((row != -1).sum())]
        single, _ = model.sample(
            cond[i : i + 1, : lens[i]], row, int(durations[i]), steps=4, cfg_strength=2.0, seed=i + 1
        )
        n = int(durations[i])
        assert torch.allclose(batched[i, :n].detach(), single[0], atol=1e-5)
        loose_gaps.append((loose[i, :n] - single[0]).abs().max().item())
    # F5-TTS's batching lets padding leak into the shorter samples; the longest one is unaffected.
    assert loose_gaps[1] < 1e-5 and loose_gaps[0] > 1e-4 and loose_gaps[2] > 1e-4


def test_edit_mask_and_no_ref_audio(tiny):
    cond = _prompt()
    keep = torch.ones(1, 10, dtype=torch.bool)
    keep[:, 3:6] = False
    out, _ = tiny.sample(cond, tiny_text(1), 24, steps=2, seed=0, edit_mask=keep)
    assert torch.equal(out[:, :3], cond[:, :3]) and not torch.equal(out[:, 3:6], cond[:, 3:6])
    silent, _ = tiny.sample(cond, tiny_text(1), 24, steps=2, seed=0, no_ref_audio=True)
    assert torch.count_nonzero(silent[:, :10]) == 0


def test_raw_wave_prompt_and_vocoder(tiny):
    wave = torch.randn(1, 64 * 9) * 0.1
    out, _ = tiny.sample(wave, tiny_text(1), 24, steps=2, seed=0)
    assert torch.allclose(out[:, :10], tiny.mel_spec(wave).transpose(1, 2))
    wav, _ = tiny.sample(wave, tiny_text(1), 24, steps=2, seed=0, vocoder=lambda mel: mel.sum(dim=1))
    assert wav.shape == (1, 24)


def test_string_text_uses_the_vocabulary():
    model = make_tiny()
    model.vocab_char_map = {c: i for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz")}
    out, _ = model.sample(_prompt(), ["hello there"], 30, steps=2, seed=0)
    ids = torch.tensor([[model.vocab_char_map[c] for c in "hello there"]])
    ref, _ = model.sample(_prompt(), ids, 30, steps=2, seed=0)
    assert torch.equal(out, ref)


def test_explicit_time_grid_reproduces_the_named_grids_and_starts_anywhere(tiny):
    from flowtts.sampling.grids import make_grid

    named, trajectory = _sample(tiny, steps=5, sway_sampling_coef=-1.0)
    times = make_grid(5, use_epss=True, sway_coef=-1.0).tolist()
    explicit, _ = _sample(tiny, steps=32, sway_sampling_coef=None, t_grid=times)  # steps comes from the grid
    assert torch.equal(named, explicit)
    # starting mid-way from a state of the trajectory finishes the same solve
    tail, _ = _sample(tiny, sway_sampling_coef=None, t_grid=times[3:], noise=trajectory[3])
    assert torch.allclose(tail, named, atol=1e-6)
    grads = []
    for grid in (dict(steps=5, sway_sampling_coef=-1.0), dict(sway_sampling_coef=None, t_grid=torch.tensor(times))):
        tiny.zero_grad()
        out, _ = _sample(tiny, cache=False, **grid)
        out.pow(2).mean().backward()
        grads.append(tiny.transformer.proj_out.weight.grad.clone())
    assert torch.equal(*grads)


# ----------------------------------------------------------------- bad input


BAD_INPUTS = [
    (dict(cond=torch.randn(1, 10, D + 1)), ValueError, "channels"),
    (dict(cond=torch.randn(2, 10, D)), ValueError, "batch size"),
    (dict(text=[""]), ValueError, "empty"),
    (dict(text=torch.full((1, 4), -1)), ValueError, "empty"),
    (dict(text="hello"), TypeError, "list of strings"),
    (dict(text=torch.tensor([[3, 99]])), ValueError, "text_num_embeds"),
    (dict(duration=0), ValueError, "duration"),
    (dict(duration=-3), ValueError, "duration"),
    (dict(duration=20.5), TypeError, "duration"),
    (dict(duration=torch.tensor([20.0])), TypeError, "duration"),
    (dict(duration=torch.tensor([20, 30])), ValueError, "duration"),
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=2.0), ValueError, "steps"),
    (dict(cond=torch.full((1, 10, D), float("nan"))), ValueError, "NaN"),
    (dict(cond=torch.full((1, 10, D), float("inf"))), ValueError, "NaN or Inf"),
    (dict(lens=torch.tensor([11])), ValueError, "lens"),
    (dict(seed=[1, 2]), ValueError, "seed"),
    (dict(noise=torch.randn(1, 5, D)), ValueError, "noise"),
    (dict(max_duration=8), ValueError, "max_duration"),
    (dict(cfg_strength=float("nan")), ValueError, "cfg_strength"),
    (dict(grad_checkpoint=True), ValueError, "cache=False"),
    (dict(cache=False, backprop_steps=9), ValueError, "backprop_steps"),
    (dict(edit_mask=torch.ones(1, 4, dtype=torch.bool)), ValueError, "edit_mask"),
    (dict(t_grid=[0.0, 0.5, 0.5, 1.0]), ValueError, "t_grid must be strictly increasing"),
    (dict(t_grid=[0.0, 1.5]), ValueError, "t_grid must lie in"),
    (dict(t_grid=[0.5]), ValueError, "at least 2 times"),
    (dict(t_grid="0,1"), ValueError, "t_grid must be a sequence"),
    (dict(t_grid=[0.0, 1.0], sway_sampling_coef=-1.0), ValueError, "sway_sampling_coef=None"),
]


@pytest.mark.parametrize("grad_enabled", [True, False])
@pytest.mark.parametrize("bad, exc, match", BAD_INPUTS)
def test_bad_input_raises_and_leaves_no_state(bad, exc, match, grad_enabled):
    model = make_tiny().train()
    args = {"cond": _prompt(), "text": tiny_text(1), "duration": 24, "steps": 2, **bad}
    cond, text, duration = args.pop("cond"), args.pop("text"), args.pop("duration")
    before = _module_state(model)
    with torch.set_grad_enabled(grad_enabled):
        with pytest.raises(exc, match=match):
            model.sample(cond, text, duration, **args)
        assert torch.is_grad_enabled() == grad_enabled
    assert model.training  # not switched to eval by a call that failed
    _assert_same_state(before, _module_state(model))  # nor anything else left changed


def test_unknown_solver_method_is_rejected(tiny):
    tiny.odeint_kwargs = {"method": "dopri5"}
    tiny.train()
    with pytest.raises(ValueError, match="dopri5"):
        _sample(tiny)
    assert tiny.training


@pytest.mark.parametrize("cache", [True, False])
def test_grad_mode_restored_when_the_network_raises(cache, monkeypatch):
    model = make_tiny()
    calls = []
    velocity = model.transformer.velocity

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("network failed")
        return velocity(*args, **kwargs)

    monkeypatch.setattr(model.transformer, "velocity", failing)
    for enabled in (True, False):
        calls.clear()
        with torch.set_grad_enabled(enabled):
            with pytest.raises(RuntimeError, match="network failed"):
                _sample(model, cache=cache)
            assert torch.is_grad_enabled() == enabled
    assert len(calls) == 3


# ----------------------------------------------------------------- training loss


def test_training_loss_is_finite_masked_and_backpropagates(tiny):
    tiny.train()
    mel = _prompt(2, n=30)
    g = torch.Generator().manual_seed(0)
    loss, cond, pred = tiny(mel, tiny_text(2), lens=torch.tensor([30, 20]), generator=g)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == mel.shape
    zeroed = (cond == 0).all(dim=-1)
    assert zeroed[0].sum() >= 0.7 * 30 * 0.99 and zeroed[1, :20].sum() >= 0.7 * 20 * 0.99
    loss.backward()
    assert tiny.transformer.proj_out.weight.grad.abs().sum() > 0
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    # dropout is 0 in the tiny model: the generator fixes every draw (span, noise, time, CFG drops)
    assert torch.equal(tiny(mel, tiny_text(2), generator=g1)[0], tiny(mel, tiny_text(2), generator=g2)[0])


# ----------------------------------------------------------------- reduced precision


@pytest.mark.parametrize("cache", [True, False])
def test_bfloat16_network_keeps_a_float32_state_and_is_deterministic(cache):
    model = make_tiny().eval()
    full, _ = _sample(model, cache=cache)
    a, trajectory = _sample(model, cache=cache, dtype="bfloat16")
    b, _ = _sample(model, cache=cache, dtype=torch.bfloat16)
    assert a.dtype == torch.float32 and trajectory.dtype == torch.float32
    assert torch.equal(a, b)
    gap = (a - full).abs().mean().item()
    assert 0 < gap < 0.05 * full[:, 10:].abs().mean().item()  # really ran in bf16, and stayed close
    if not cache:
        a[:, 10:].pow(2).mean().backward()
        assert model.transformer.proj_out.weight.grad.dtype == torch.float32


def test_bfloat16_training_step_and_dtype_errors(tiny):
    tiny.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = tiny(_prompt(2, n=30), tiny_text(2), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and tiny.transformer.proj_out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs a GPU"):
        _sample(tiny, dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        _sample(tiny, dtype="int8")
