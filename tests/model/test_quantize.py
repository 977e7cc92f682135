import copy

import pytest
import torch

import flowtts
from conftest import make_tiny, tiny_text
from flowtts.model.quantize import choose_engine, quantizable_layers, quantize

QUANTIZED_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def _sample(model, seed=3, **kw):
    cond = torch.randn(1, 10, model.num_channels, generator=torch.Generator().manual_seed(0))
    return model.sample(cond, tiny_text(1), 40, steps=6, cfg_strength=2.0, seed=seed, **kw)


def test_int8_layers_are_the_backbones_products_and_the_rest_stays_float32():
    model = make_tiny(dim=64, heads=4)
    q = quantize(model)
    assert q is not model and q.quantized == "int8" and model.quantized is None
    kinds = {name: type(m) for name, m in q.transformer.named_modules()}
    int8 = {name for name, kind in kinds.items() if kind is QUANTIZED_LINEAR}
    depth, conv_layers = len(q.transformer.transformer_blocks), len(q.transformer.text_embed.text_blocks)
    assert len(int8) == 4 * depth + 2 * conv_layers, sorted(int8)
    assert not quantizable_layers(q.transformer)  # nothing left to quantise
    assert all(name.endswith(("to_qkv", "to_out.0", "ff.ff.0.0", "ff.ff.2", "pwconv1", "pwconv2")) for name in int8), (
        int8
    )
    for kept in ("time_embed", "proj_out", "norm_out", "attn_norm", "input_embed.proj"):
        assert not any(name.startswith(kept) or f".{kept}" in name for name in int8), kept
    assert all(p.dtype == torch.float32 for p in q.parameters())


def test_int8_sampling_is_deterministic_float32_and_close_to_the_float_model():
    model = make_tiny(dim=64, heads=4).eval()
    q = quantize(model)
    out, trajectory = _sample(q)
    again, _ = _sample(q)
    assert torch.equal(out, again)  # fixed seed, same samples
    assert out.dtype == torch.float32 and trajectory.dtype == torch.float32  # the ODE state
    reference, _ = _sample(model)
    generated = slice(10, 40)
    error = (out[:, generated] - reference[:, generated]).abs().max() / reference[:, generated].abs().max()
    assert 0 < error < 0.05, float(error)
    # A deep copy repacks its weights for torch's engine at copy time: the samples of a model packed for it.
    copied = copy.deepcopy(q)
    packed_for_default = quantize(model, engine=torch.backends.quantized.engine)
    assert torch.allclose(_sample(copied)[0], _sample(packed_for_default)[0], atol=1e-5)


def test_a_quantised_model_refuses_the_differentiable_path_training_and_saving(tmp_path):
    q = quantize(make_tiny())
    for kw in (dict(cache=False), dict(cache=False, grad_checkpoint=True), dict(cache=False, backprop_steps=1)):
        with pytest.raises(ValueError, match=r"quantised \(int8\).*cannot be used for sample\(cache=False\)"):
            _sample(q, **kw)
    with pytest.raises(ValueError, match="float32 activations"):
        _sample(q, dtype="bfloat16")
    mel = torch.randn(2, 30, q.num_channels)
    with pytest.raises(ValueError, match="cannot be used for training"):
        q(mel, tiny_text(2))
    with pytest.raises(ValueError, match="is not saved: save the float32 model"):
        flowtts.save(q, tmp_path / "q.safetensors")
    assert not (tmp_path / "q.safetensors").exists()
    with pytest.raises(ValueError, match="already quantised"):
        quantize(q)


def test_bad_quantize_arguments_are_named():
    model = make_tiny()
    with pytest.raises(ValueError, match=r"quantize must be one of \('int8',\)"):
        quantize(model, "int4")
    with pytest.raises(ValueError, match="starts from float32 weights"):
        quantize(make_tiny(dtype=torch.float64))
    with pytest.raises(ValueError, match="quantised engine"):
        choose_engine("qnnpack-nonexistent")
    with pytest.raises(ValueError, match="quantize must be one of"):
        flowtts.load("builtin", quantize="fp4")
    with pytest.raises(ValueError, match="runs on CPU in float32"):
        flowtts.load("builtin", quantize="int8", dtype="bfloat16")
    engine = torch.backends.quantized.engine
    quantize(model, engine="fbgemm")
    assert torch.backends.quantized.engine == engine  # set only while packing


def test_f5tts_with_quantize_speaks_the_builtin_student_in_int8():
    from flowtts import F5TTS

    quantized, plain = F5TTS("builtin:student", quantize="int8"), F5TTS("builtin:student")
    assert quantized.ema_model.quantized == "int8"
    wave_q, rate, mel_q = quantized.infer(None, "", "Hello there.", seed=5, progress=False, show_info=None)
    wave_f, _, mel_f = plain.infer(None, "", "Hello there.", seed=5, progress=False, show_info=None)
    assert rate == 24_000 and wave_q.shape == wave_f.shape and mel_q.shape == mel_f.shape
    difference = abs(mel_q - mel_f).mean() / abs(mel_f).mean()
    assert 0 < difference < 0.05, difference
