import copy

import pytest
import torch

from conftest import TINY, randomise, tiny_text
from flowtts import DiT
from flowtts.model.embeddings import _average_upsample


def _inputs(b=2, n=20, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g), torch.randn(b, n, d, generator=g), tiny_text(b)


def test_zero_initialised_output_and_shapes():
    dit = DiT(**TINY)
    x, cond, text = _inputs()
    out = dit(x, cond, text, torch.tensor(0.3))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0


def test_cfg_infer_packs_conditional_and_unconditional_branches():
    dit = randomise(DiT(**TINY)).eval()
    x, cond, text = _inputs()
    t = torch.tensor([0.2, 0.7])
    packed = dit(x, cond, text, t, cfg_infer=True)
    c = dit(x, cond, text, t)
    u = dit(x, cond, text, t, drop_audio_cond=True, drop_text=True)
    assert torch.allclose(packed, torch.cat((c, u)), atol=1e-6)
    assert not torch.allclose(c, u, atol=1e-3)


def test_precomputed_text_embedding_gives_the_same_output():
    dit = randomise(DiT(**TINY)).eval()
    x, cond, text = _inputs()
    mask = torch.tensor([[True] * 20, [True] * 14 + [False] * 6])
    t = torch.tensor(0.5)
    emb = (dit.embed_text(text, 20, mask), dit.embed_text(text, 20, mask, drop_text=True))
    assert torch.equal(
        dit(x, cond, None, t, mask=mask, cfg_infer=True, text_embed=emb),
        dit(x, cond, text, t, mask=mask, cfg_infer=True),
    )


@pytest.mark.parametrize(
    "overrides, missing, unexpected",
    [
        (dict(conv_layers=0), False, True),
        (dict(text_mask_padding=False), False, False),  # text is padded to the frames in every row
        (dict(pe_attn_head=1), False, False),
        (dict(qk_norm="rms_norm"), True, False),
        (dict(long_skip_connection=True), True, False),
    ],
)
def test_architecture_options_run_and_change_the_output(overrides, missing, unexpected):
    """Each option, with every weight it shares with the base model equal to the base's, changes the output
    (an option that is silently ignored leaves it equal)."""
    base = randomise(DiT(**TINY)).eval()
    torch.manual_seed(0)  # the option's own new parameters (norm scales, skip projection): their default init
    other = DiT(**{**TINY, **overrides}).eval()
    result = other.load_state_dict(base.state_dict(), strict=False)
    assert bool(result.missing_keys) == missing and bool(result.unexpected_keys) == unexpected, result
    x, cond, text = _inputs()
    t = torch.tensor(0.5)
    with torch.no_grad():
        ref, out = base(x, cond, text, t), other(x, cond, text, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    for row in range(2):
        gap = float((out[row] - ref[row]).abs().max())
        assert gap > 1e-3 * float(ref[row].abs().max()), (overrides, row, gap)  # ignored: 0


def test_isolate_batch_makes_batched_equal_to_single():
    dit = randomise(DiT(**TINY)).eval()
    x, cond, text = _inputs(b=2, n=24)
    mask = torch.tensor([[True] * 24, [True] * 15 + [False] * 9])
    t = torch.tensor([0.4, 0.4])
    batched = dit(x, cond, text, t, mask=mask, isolate_batch=True)
    single = dit(x[1:, :15], cond[1:, :15], text[1:], t[1:])
    assert torch.allclose(batched[1, :15], single[0], atol=2e-6)
    unmasked = dit(x, cond, text, t, mask=mask)
    assert not torch.allclose(unmasked[1, :15], single[0], atol=1e-4)  # F5-TTS's default attends to padding


def test_average_upsampling_matches_a_direct_loop():
    torch.manual_seed(0)
    text = torch.randn(3, 12, 4)
    valid = torch.zeros(3, 12, dtype=torch.bool)
    for i, n in enumerate([5, 12, 3]):
        valid[i, :n] = True
    target = torch.tensor([12, 9, 10])
    out = _average_upsample(text, valid, target)
    for i in range(3):
        n_tok, n_frames = int(valid[i].sum()), int(target[i])
        idx = []
        for j in range(n_tok):
            idx += [j] * (n_frames // n_tok + (1 if j >= n_tok - n_frames % n_tok else 0))
        idx = idx[:n_frames]
        assert torch.equal(out[i, :n_frames], text[i, idx])
        assert torch.count_nonzero(out[i, n_frames:]) == 0


def test_average_upsampling_needs_mask_padding():
    with pytest.raises(ValueError, match="text_mask_padding"):
        DiT(**{**TINY, "text_embedding_average_upsampling": True, "text_mask_padding": False})
    dit = randomise(DiT(**{**TINY, "text_embedding_average_upsampling": True})).eval()
    x, cond, text = _inputs()
    assert dit(x, cond, text, torch.tensor(0.5)).shape == x.shape


def test_checkpoint_activations_gives_identical_gradients():
    dit = randomise(DiT(**TINY)).double()
    ckpt = copy.deepcopy(dit)
    ckpt.checkpoint_activations = True
    x, cond, text = (t.double() if t.is_floating_point() else t for t in _inputs())
    grads = []
    for model in (dit, ckpt):
        model.zero_grad()
        torch.manual_seed(0)  # dropout is on (train mode): same masks for both
        model(x, cond, text, torch.tensor(0.3, dtype=torch.float64)).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_bad_constructor_options():
    with pytest.raises(ValueError, match="qk_norm"):
        DiT(**{**TINY, "qk_norm": "layer"})
    with pytest.raises(ValueError, match="attn_backend"):
        DiT(**{**TINY, "attn_backend": "xformers"})


@pytest.mark.parametrize("cfg_infer", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_prepared_velocity_equals_forward(cfg_infer, masked):
    dit = randomise(DiT(**TINY)).eval()
    x, cond, text = _inputs(n=22)
    mask = torch.tensor([[True] * 22, [True] * 17 + [False] * 5]) if masked else None
    t = torch.tensor(0.35)
    shared = dit.condition(cond, text, mask, cfg_infer=cfg_infer)
    assert torch.allclose(dit.velocity(x, t, shared), dit(x, cond, text, t, mask=mask, cfg_infer=cfg_infer), atol=1e-5)
    dropped = dit.condition(cond, text, mask, drop_audio_cond=True, drop_text=True)
    reference = dit(x, cond, text, t, mask=mask, drop_audio_cond=True, drop_text=True)
    assert torch.allclose(dit.velocity(x, t, dropped), reference, atol=1e-5)


def test_the_residual_stream_is_contiguous_in_every_block():
    """The convolutional position embedding works channels-first; its output must not hand that layout
    to the residual stream (every add, norm and projection of every block would then run strided)."""
    dit = randomise(DiT(**TINY)).eval()
    x, cond, text = _inputs()
    layouts = []
    hooks = [
        block.register_forward_pre_hook(lambda module, args: layouts.append(args[0].is_contiguous()))
        for block in dit.transformer_blocks
    ]
    with torch.no_grad():
        dit(x, cond, text, torch.tensor(0.3))
        conditioning = dit.condition(cond, text, None, cfg_infer=True)
        dit.velocity(x, torch.tensor(0.3), conditioning)
    for hook in hooks:
        hook.remove()
    assert len(layouts) == 2 * len(dit.transformer_blocks) and all(layouts)
