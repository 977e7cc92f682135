"""int8 inference on CPU: the backbone's matrix products in 8 bits, with activation scales found per call.

The Linear layers that carry a step's work -- attention projections, feed-forward layers and the text
ConvNeXt's pointwise layers -- become torch's dynamically quantised
Linear (``torch.ao.nn.quantized.dynamic.Linear``): int8 weights with one scale per output channel,
activations quantised per call from their observed range, products accumulated in int32 by torch's x86
engine (fbgemm / oneDNN). Why torch's own engine: it ships in the CPU wheel the project already needs,
runs on AVX2 and AVX-512 machines alike, and fuses quantise-multiply-dequantise into one kernel per
layer; torchao's CPU int8 path goes through separate quantise and ``_int_mm`` calls.

Everything that needs range or accuracy stays float32: the ODE state and its update (the solver never
sees an int8 tensor), the time embedding and the adaptive norms it modulates (``AdaLayerNorm*``), the
output projection to the mel, the input projection (small, and sliced by the conditioning),
normalisation statistics and softmax.

A quantised model is for inference only: the differentiable path (``sample(cache=False)``,
``grad_checkpoint``, ``backprop_steps``), training and saving refuse it with a clear message.
"""

from __future__ import annotations

import copy
import warnings

import torch

MODES = ("int8",)
# Modules whose Linear layers stay float32, by their attribute name anywhere in the backbone; the input
# projection too, whose weight the conditioning slices into its noisy-mel, prompt and text shares.
_KEPT = ("time_embed", "norm", "attn_norm", "ff_norm", "norm_out", "proj_out", "long_skip_connection")
_KEPT_LAYERS = ("input_embed.proj",)


def quantized_mode(model) -> str | None:
    """``"int8"`` for a model made by :func:`quantize`, else ``None``."""
    return model.quantized


def refuse_quantized(model, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when ``model`` is quantised (inference only).

    Args:
        model: A :class:`flowtts.CFM`.
        what: What was asked, for the message (``"training"``, ``"sample(cache=False)"``...).
    """
    mode = quantized_mode(model)
    if mode is not None:
        raise ValueError(
            f"this model is quantised ({mode}) for inference and cannot be used for {what}: "
            "use the float32 model (load it without quantize=)"
        )


def quantizable_layers(backbone: torch.nn.Module) -> list[str]:
    """Names of the Linear layers of ``backbone`` that :func:`quantize` turns into int8.

    Attention's query, key and value layers count as their stacked ``to_qkv`` where it exists (the
    separate ones are then unused by the cached sampler and stay as they are).
    """
    names = []
    for name, module in backbone.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".")
        if any(part in _KEPT for part in parts) or name in _KEPT_LAYERS:
            continue
        if parts[-1] in ("to_q", "to_k", "to_v") and hasattr(backbone.get_submodule(".".join(parts[:-1])), "to_qkv"):
            continue
        names.append(name)
    return names


def _stack_qkv(backbone: torch.nn.Module) -> None:
    """Give every attention layer a ``to_qkv`` Linear: its query, key and value layers stacked (one product)."""
    from flowtts.model.modules import Attention

    for module in backbone.modules():
        if isinstance(module, Attention):
            weight, bias = module.fused_qkv()
            stacked = torch.nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                stacked.weight.copy_(weight)
                stacked.bias.copy_(bias)
            module.to_qkv = stacked.requires_grad_(False)


def has_amx_int8() -> bool:
    """Whether this CPU has AMX int8 tiles (Linux ``/proc/cpuinfo``; ``False`` where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        pass
    return False


def choose_engine(engine: str | None = None) -> str:
    """The quantised engine whose kernels :func:`quantize` packs the weights for.

    ``None`` picks ``"onednn"`` on CPUs with AMX int8 tiles (its int8 products measured 2.6x faster than
    fbgemm's there, see ``benchmarks/sample_speed.py``) and torch's default (``"x86"``, which runs
    fbgemm's AVX2/AVX-512 kernels) elsewhere.

    Raises:
        ValueError: An engine this torch build does not have.
    """
    engines = torch.backends.quantized.supported_engines
    if engine is None:
        engine = "onednn" if has_amx_int8() and "onednn" in engines else torch.backends.quantized.engine
    if engine not in ("x86", "fbgemm", "onednn") or engine not in engines:
        raise ValueError(
            f"int8 needs torch's x86, fbgemm or onednn quantised engine; got {engine!r} (this build has {engines})"
        )
    return engine


def quantize(model, mode: str = "int8", *, inplace: bool = False, engine: str | None = None):
    """A copy of ``model`` whose backbone runs its matrix products in int8 (see the module docstring).

    Args:
        model: A :class:`flowtts.CFM` on CPU, float32.
        mode: ``"int8"`` (the only mode).
        inplace: Change ``model`` itself instead of a copy.
        engine: Quantised engine to pack the weights for (:func:`choose_engine`; default: by CPU). The packed
            layers keep their engine's kernels; ``torch.backends.quantized.engine`` is set only while
            packing and restored after. A deep copy repacks for the engine set at copy time (same
            results within float rounding).

    Returns:
        The quantised model, in eval mode with ``quantized == "int8"``; its ``sample(cache=True)`` takes the
        same arguments as before.

    Raises:
        ValueError: An unknown ``mode``, a model that is not on CPU or not float32, or one already quantised.
    """
    if mode not in MODES:
        raise ValueError(f"quantize must be one of {MODES}, got {mode!r}")
    if quantized_mode(model) is not None:
        raise ValueError(f"this model is already quantised ({quantized_mode(model)})")
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 quantisation runs on CPU; the model is on {device} (load it with device='cpu')")
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(f"int8 quantisation starts from float32 weights; the model is {dtype}")
    engine = choose_engine(engine)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval().requires_grad_(False)
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    _stack_qkv(model.transformer)
    names = quantizable_layers(model.transformer)
    default_engine = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            quantize_dynamic(
                model.transformer,
                {name: per_channel_dynamic_qconfig for name in names},
                dtype=torch.qint8,
                inplace=True,
            )
    finally:
        torch.backends.quantized.engine = default_engine
    model.quantized = mode
    model.quantized_engine = engine
    return model
