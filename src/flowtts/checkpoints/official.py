"""F5-TTS checkpoint files: reading them safely and matching them to a preset.

Facts of the format: ``.pt`` files hold ``ema_model_state_dict`` (keys prefixed ``ema_model.``, plus
``initted``/``step`` bookkeeping) and may hold ``model_state_dict``; ``.safetensors`` files hold the
bare EMA dict. Legacy files carry ``mel_spec.*`` buffers, which no current model has.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from flowtts.config import PRESETS, ModelConfig

_BOOKKEEPING = ("initted", "step", "update")
# v1 first: preferred where v0 fits the same shapes
_OFFICIAL_PRESETS = ("F5TTS_v1_Base", "F5TTS_Base", "F5TTS_v1_Small", "F5TTS_Small", "E2TTS_Base", "E2TTS_Small")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the requested architecture."""


def read_file(path: str | os.PathLike) -> dict[str, torch.Tensor] | dict:
    """Read a ``.safetensors`` or ``.pt`` file without unpickling arbitrary objects."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-weights files
        raise CheckpointError(f"{path}: not a readable checkpoint: {why_unreadable(exc)}") from None


def why_unreadable(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words for a user (without torch's advice to retry
    with ``weights_only=False``, which would run whatever code the file holds)."""
    import pickle

    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
        return (
            "holds Python objects besides tensors and plain containers; flowtts reads weights only and never "
            "runs code stored in a file"
        )
    first = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
    if isinstance(error, EOFError) or not str(error).strip():
        first = "the file ends early"
    return f"damaged or not a PyTorch checkpoint ({first})"


def model_state_dict(raw: Mapping, *, use_ema: bool = True, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The CFM state dict inside an F5-TTS checkpoint, bookkeeping and legacy mel buffers removed."""
    if "ema_model_state_dict" in raw or "model_state_dict" in raw:
        key = "ema_model_state_dict" if use_ema else "model_state_dict"
        if key not in raw:
            other = "model_state_dict" if use_ema else "ema_model_state_dict"
            raise CheckpointError(f"{source}: has no {key!r} (it has {other!r}; set use_ema={not use_ema})")
        state = raw[key]
    elif "ema" in raw and "optimizer" in raw:  # flowtts's resume state (train, distill, reward)
        raise CheckpointError(
            f"{source}: a flowtts run's resume state; load the weights written beside it "
            "(model.safetensors, or student.safetensors / best.safetensors of a distillation)"
        )
    else:
        state = raw  # bare dict (.safetensors, or an exported .pt)
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{source}: does not hold a state dict of tensors")
    out = {}
    for k, v in state.items():
        name = k.removeprefix("ema_model.")
        if name in _BOOKKEEPING or name.startswith("mel_spec."):
            continue
        out[name] = v
    return out


def vocab_size_of(state: Mapping[str, torch.Tensor]) -> int:
    """``text_num_embeds`` of a checkpoint (its text embedding has one extra filler row)."""
    weight = state.get("transformer.text_embed.text_embed.weight")
    if weight is None:
        raise CheckpointError("checkpoint has no transformer.text_embed.text_embed.weight: not an F5-TTS/E2-TTS model")
    return weight.shape[0] - 1


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of a model built from ``config`` (built on the meta device: free)."""
    from flowtts.model.build import build_model

    with torch.device("meta"):
        model = build_model(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def mismatches(state: Mapping[str, torch.Tensor], config: ModelConfig) -> tuple[list, list, list]:
    """``(missing, unexpected, wrong_shape)`` of ``state`` against ``config``."""
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        (k, tuple(state[k].shape), expected[k])
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != expected[k]
    )
    return missing, unexpected, wrong


def describe(missing, unexpected, wrong, limit: int = 8) -> str:
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    if wrong:
        shown = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in wrong[:limit])
        more = f" (+{len(wrong) - limit} more)" if len(wrong) > limit else ""
        parts.append(f"shape mismatches: {shown}{more}")
    return "; ".join(parts)


def match_preset(state: Mapping[str, torch.Tensor]) -> str:
    """The official preset whose shapes fit ``state``; v1 is preferred where v0 fits the same shapes."""
    config_vocab = vocab_size_of(state)
    for name in _OFFICIAL_PRESETS + tuple(p for p in PRESETS if p not in _OFFICIAL_PRESETS):
        if not any(mismatches(state, PRESETS[name].with_vocab_size(config_vocab))):
            return name
    raise CheckpointError(f"checkpoint matches no preset ({', '.join(PRESETS)}); pass the architecture explicitly")
