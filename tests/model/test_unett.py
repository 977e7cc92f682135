"""The E2-TTS backbone: upstream parity, the same sampling contract as the DiT, checkpoints and presets."""

import copy

import pytest
import torch

from conftest import RecomputingBackbone, make_tiny, tiny_text
from flowtts import UNetT
from flowtts.checkpoints.official import match_preset
from flowtts.config import PRESETS, ModelConfig
from upstream import load_upstream, load_upstream_unett, needs_upstream, random_pair

D = 12  # mel channels of the tiny model
UPSTREAM_CONFIGS = {
    "e2-style": dict(dim=64, depth=4, heads=4, dim_head=16, ff_mult=2, text_mask_padding=False, pe_attn_head=1),
    "conv-add": dict(
        dim=64, depth=4, heads=4, dim_head=16, ff_mult=2, text_dim=32, conv_layers=2, skip_connect_type="add"
    ),
    "no-skip-qknorm": dict(dim=64, depth=2, heads=4, dim_head=16, skip_connect_type="none", qk_norm="rms_norm"),
}
has_upstream_unett = load_upstream_unett() is not None


def tiny_e2(dtype=torch.float64, **overrides):
    return make_tiny(dtype, backbone=UNetT, **{"depth": 4, **overrides})


def _prompt(b=1, n=10, seed=0, dtype=torch.float64):
    return torch.randn(b, n, D, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _pair(config):
    return random_pair(load_upstream_unett(), UNetT, config)


# ----------------------------------------------------------------- upstream parity


@needs_upstream(has_upstream_unett, "f5_tts.unett")
@pytest.mark.parametrize("name", sorted(UPSTREAM_CONFIGS))
def test_state_dict_keys_and_shapes_are_upstreams(name):
    theirs, ours = _pair(UPSTREAM_CONFIGS[name])
    a, b = theirs.state_dict(), ours.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    depth = UPSTREAM_CONFIGS[name]["depth"]
    has_proj = UPSTREAM_CONFIGS[name].get("skip_connect_type", "concat") == "concat"
    assert (f"transformer.layers.{depth - 1}.0.weight" in b) == has_proj
    assert "transformer.layers.0.0.weight" not in b and "transformer.layers.0.1.g" in b


@needs_upstream(has_upstream_unett, "f5_tts.unett")
@pytest.mark.parametrize("name", sorted(UPSTREAM_CONFIGS))
@pytest.mark.parametrize("steps, cfg, sway", [(8, 2.0, -1.0), (5, 0.0, None)])
def test_sample_matches_upstream(name, steps, cfg, sway):
    theirs, ours = _pair(UPSTREAM_CONFIGS[name])
    cond = torch.randn(1, 30, 100, generator=torch.Generator().manual_seed(1))
    kwargs = dict(steps=steps, cfg_strength=cfg, sway_sampling_coef=sway, seed=5)
    ref, ref_traj = theirs.sample(cond, ["some text, and more"], 90, **kwargs)
    out, traj = ours.sample(cond, ["some text, and more"], 90, **kwargs)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    assert torch.allclose(traj, ref_traj, atol=1e-5, rtol=0)
    assert (out[:, 30:] - traj[0, :, 30:]).abs().mean() > 0.02  # the network did something


# Batched sampling and the training forward: tests/model/test_parity.py, parametrised over both backbones.


# ----------------------------------------------------------------- the backbone's own contract


@pytest.mark.parametrize("cfg_infer", [False, True])
@pytest.mark.parametrize("isolate", [False, True])
def test_prepared_velocity_equals_forward(cfg_infer, isolate):
    net = tiny_e2().transformer.eval()
    x, cond = _prompt(2, 20, seed=1), _prompt(2, 20, seed=2)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 14:] = False
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    text = tiny_text(2)
    ref = net(x, cond, text, t, mask=mask, cfg_infer=cfg_infer, isolate_batch=isolate)
    shared = net.condition(cond, text, mask, cfg_infer=cfg_infer, isolate_batch=isolate)
    assert torch.allclose(net.velocity(x, t, shared), ref, rtol=0, atol=1e-12)
    assert ref.shape == ((4 if cfg_infer else 2), 20, D)
    if cfg_infer:
        uncond = net(x, cond, text, t, mask=mask, drop_audio_cond=True, drop_text=True, isolate_batch=isolate)
        assert torch.allclose(ref[2:], uncond, rtol=0, atol=1e-12)
        assert (ref[:2] - ref[2:]).abs().max() > 1e-3


def test_skip_connections_and_the_time_token_matter():
    net = tiny_e2().transformer.eval()
    x, cond, text = _prompt(1, 16, seed=1), _prompt(1, 16, seed=2), tiny_text(1)
    base = net(x, cond, text, torch.tensor(0.4, dtype=torch.float64))
    assert (net(x, cond, text, torch.tensor(0.6, dtype=torch.float64)) - base).abs().max() > 1e-4  # one token of 17
    with torch.no_grad():
        net.layers[-1][0].weight.mul_(0.5)  # the projection of the outermost skip connection
    assert (net(x, cond, text, torch.tensor(0.4, dtype=torch.float64)) - base).abs().max() > 1e-3


@pytest.mark.parametrize("cache", [True, False])
def test_batch_of_different_lengths_matches_single_calls_when_isolated(cache):
    model = tiny_e2(torch.float32).eval()
    cond, lens, durations, text = _prompt(3, dtype=torch.float32), torch.tensor([10, 6, 8]), [24, 30, 17], tiny_text(3)
    kwargs = dict(steps=4, cfg_strength=2.0, seed=[1, 2, 3], cache=cache)
    batched, _ = model.sample(cond, text, torch.tensor(durations), lens=lens, isolate_batch=True, **kwargs)
    loose, _ = model.sample(cond, text, torch.tensor(durations), lens=lens, **kwargs)
    gaps = []
    for i, n in enumerate(durations):
        row = text[i : i + 1, : int((text[i] != -1).sum())]
        single, _ = model.sample(cond[i : i + 1, : lens[i]], row, n, steps=4, cfg_strength=2.0, seed=i + 1)
        assert torch.allclose(batched[i, :n].detach(), single[0], atol=1e-5)
        gaps.append((loose[i, :n].detach() - single[0]).abs().max().item())
    assert gaps[1] < 1e-5 and max(gaps) > 1e-4  # upstream's batching leaks padding into the shorter ones


def test_bad_constructor_options():
    with pytest.raises(ValueError, match="depth must be even"):
        UNetT(dim=32, depth=3)
    with pytest.raises(ValueError, match="skip_connect_type must be one of"):
        UNetT(dim=32, depth=2, skip_connect_type="sum")
    with pytest.raises(ValueError, match="backbone must be one of"):
        ModelConfig(dim=32, depth=2, heads=2, backbone="MMDiT")


# ----------------------------------------------------------------- gradients through the sampler


def _grads(model, **kwargs):
    torch.manual_seed(0)  # the same dropout masks in every call
    out, _ = model.sample(
        _prompt(2), tiny_text(2), 24, steps=4, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=7, cache=False, **kwargs
    )
    out.pow(2).sum().backward()
    return out.detach(), {n.replace(".net.", "."): p.grad.clone() for n, p in model.named_parameters()}


def test_differentiable_sampling_equals_recomputing_every_step_and_reaches_every_parameter():
    model = tiny_e2().eval()
    reference = copy.deepcopy(model)
    reference.transformer = RecomputingBackbone(reference.transformer)
    out, grads = _grads(model)
    ref_out, ref_grads = _grads(reference)
    assert torch.allclose(out, ref_out, rtol=0, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert torch.allclose(g, ref_grads[name], rtol=1e-9, atol=1e-12), name
        assert g.abs().sum() > 0, name  # text embedding, every block and skip projection, output layer
    fast, _ = model.sample(_prompt(2), tiny_text(2), 24, steps=4, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=7)
    assert fast.grad_fn is None and torch.allclose(fast, out, atol=1e-10)


def test_finite_differences_float64():
    model = tiny_e2().eval()
    g = torch.Generator().manual_seed(3)
    cond = _prompt(1, 8, seed=4).requires_grad_(True)
    weights = torch.randn(1, 20, D, generator=g, dtype=torch.float64)
    params = list(model.parameters())

    def loss():
        out, _ = model.sample(cond, tiny_text(1), 20, steps=3, cfg_strength=2.0, seed=1, cache=False)
        return (out * weights).sum()

    grads = torch.autograd.grad(loss(), params + [cond])
    directions = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params + [cond]]
    autograd = sum((gr * d).sum() for gr, d in zip(grads, directions)).item()
    eps, values = 1e-6, []
    with torch.no_grad():
        for sign in (1, -1):
            for p, d in zip(params + [cond], directions):
                p.add_(sign * eps * d)
            values.append(loss().item())
            for p, d in zip(params + [cond], directions):
                p.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(numeric - autograd) <= 1e-5 * abs(numeric), (numeric, autograd)


def test_checkpointing_gives_identical_gradients():
    model = tiny_e2(dropout=0.2).train()
    out, plain = _grads(model)
    model.transformer.checkpoint_activations = True
    model.zero_grad()
    out2, blocks = _grads(model)
    model.transformer.checkpoint_activations = False
    model.zero_grad()
    out3, sampler = _grads(model, grad_checkpoint=True)
    assert torch.allclose(out, out2, rtol=0, atol=1e-12) and torch.allclose(out, out3, rtol=0, atol=1e-12)
    for name, g in plain.items():
        assert torch.allclose(blocks[name], g, rtol=1e-9, atol=1e-12), name
        assert torch.allclose(sampler[name], g, rtol=1e-9, atol=1e-12), name


# ----------------------------------------------------------------- configs, presets, files


@needs_upstream(has_upstream_unett, "f5_tts.unett")
def test_e2_presets_are_upstreams_architectures_and_match_their_checkpoints():
    upstream_unett = load_upstream_unett()
    # F5-TTS's configs/E2TTS_*.yaml arch sections; shapes only, on the meta device (no memory).
    arch = dict(ff_mult=4, text_mask_padding=False, pe_attn_head=1, text_num_embeds=2545, mel_dim=100)
    for name, size in (
        ("E2TTS_Base", dict(dim=1024, depth=24, heads=16)),
        ("E2TTS_Small", dict(dim=768, depth=20, heads=12)),
    ):
        UCFM, _ = load_upstream()
        with torch.device("meta"):
            state = {k: v for k, v in UCFM(upstream_unett(**size, **arch)).state_dict().items()}
        assert match_preset(state) == name
        assert PRESETS[name].backbone == "UNetT"
    params = sum(v.numel() for k, v in state.items() if not k.endswith("inv_freq"))
    assert 150e6 < params < 200e6  # E2TTS_Small


def test_save_load_round_trip_keeps_the_backbone(tmp_path):
    import flowtts
    from flowtts.model.build import build_model

    config = ModelConfig(backbone="UNetT", dim=32, depth=2, heads=2, text_dim=None, conv_layers=0, ff_mult=2)
    model = build_model(config, {c: i for i, c in enumerate(" abc")})
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    flowtts.save(model, tmp_path / "e2.safetensors")
    back = flowtts.load(tmp_path / "e2.safetensors")
    assert isinstance(back.transformer, UNetT) and back.config == config.with_vocab_size(4)
    cond = torch.randn(1, 10, 100)
    a, _ = model.eval().sample(cond, ["abc"], 20, steps=3, seed=1)
    b, _ = back.sample(cond, ["abc"], 20, steps=3, seed=1)
    assert torch.equal(a, b)
