"""F5-TTS model config files (``configs/*.yaml``, ``--model_cfg``) read into a :class:`ModelConfig`.

Facts of the format: the ``model`` section names the ``backbone`` class (``DiT``, ``UNetT`` or
``MMDiT``), its keyword arguments under ``arch`` (missing ones take the class's defaults, which are not
the published presets': ``ff_mult=4``, ``text_dim=None``, ``conv_layers=0``, ...), and the mel front
end under ``mel_spec``; the vocabulary size comes from the checkpoint. ``attn_backend``,
``attn_mask_enabled`` and ``checkpoint_activations`` are run-time choices, not architecture.
"""

from __future__ import annotations

import json
import math
import numbers
import os

from flowtts.config import BACKBONES, MelConfig, ModelConfig

# Defaults of upstream's DiT and UNetT constructors for the keys ModelConfig holds.
_UPSTREAM_DEFAULTS = dict(
    depth=8,
    heads=8,
    dim_head=64,
    dropout=0.1,
    ff_mult=4,
    text_dim=None,
    text_mask_padding=True,
    qk_norm=None,
    conv_layers=0,
    pe_attn_head=None,
    text_embedding_average_upsampling=False,
    long_skip_connection=False,
    skip_connect_type="concat",
)
_RUNTIME_KEYS = ("attn_backend", "attn_mask_enabled", "checkpoint_activations")
# The sizes a model config may give. Every published F5-TTS/E2-TTS model is far inside (dim 1024, depth 24,
# 16 heads of 64, a 100-channel mel of n_fft 1024); the limits keep a config that is built before its
# weights are compared with it (on the meta device, and its mel front end for real) far from sizes that
# overflow or exhaust memory (dim 1e9: "Storage size calculation overflowed"; n_fft 1e9: a 200 GB filter bank;
# depth 1e7: hours of building). A file's weights must then match the config exactly.
SIZE_LIMITS = {
    "dim": 16384,
    "depth": 256,
    "heads": 256,
    "dim_head": 1024,
    "text_dim": 16384,
    "conv_layers": 64,
    "pe_attn_head": 256,
    "text_num_embeds": 1 << 20,
}
MEL_LIMITS = {
    "target_sample_rate": 192_000,
    "n_mel_channels": 1024,
    "hop_length": 16384,
    "win_length": 16384,
    "n_fft": 16384,
}
_MAY_BE_NONE = ("text_dim", "pe_attn_head", "qk_norm")
_FLAGS = ("text_mask_padding", "text_embedding_average_upsampling", "long_skip_connection")
_NAMES = ("qk_norm", "method", "backbone", "skip_connect_type")
_BACKBONE_ONLY = {"DiT": ("skip_connect_type",), "UNetT": ("text_embedding_average_upsampling", "long_skip_connection")}


def _parse(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)  # what flowtts export writes
    except json.JSONDecodeError:
        pass
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml is a dependency
        raise ImportError("reading YAML model configs needs pyyaml: pip install pyyaml") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a YAML file ({exc})") from None


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """The architecture and mel front end of an F5-TTS model config file.

    Raises:
        FileNotFoundError: No such file.
        ValueError: No ``model`` section, a backbone flowtts does not implement (``MMDiT``), an
            ``arch`` key it does not know or one that does not belong to the backbone, or a bad value
            (:func:`check_model_config`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model config not found: {path}")
    raw = _parse(path)
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("arch"), dict):
        raise ValueError(f"{path}: no model.arch section (an F5-TTS model config has model.backbone and model.arch)")
    backbone = model.get("backbone", "DiT")
    if backbone not in BACKBONES:
        raise ValueError(f"{path}: backbone {backbone!r} is not implemented in flowtts (it has {', '.join(BACKBONES)})")
    arch = {k: v for k, v in model["arch"].items() if k not in _RUNTIME_KEYS}
    known = set(_UPSTREAM_DEFAULTS) - set(_BACKBONE_ONLY[backbone]) | {"dim"}
    unknown = sorted(set(arch) - known)
    if unknown:
        raise ValueError(f"{path}: model.arch keys {', '.join(unknown)} are not arguments of {backbone}")
    if "dim" not in arch:
        raise ValueError(f"{path}: model.arch has no dim")
    mel = model.get("mel_spec") or {}
    mel_fields = set(MelConfig.__dataclass_fields__)
    if not isinstance(mel, dict) or set(mel) - mel_fields:
        raise ValueError(f"{path}: model.mel_spec keys must be among {', '.join(sorted(mel_fields))}")
    try:
        config = ModelConfig(**{**_UPSTREAM_DEFAULTS, **arch, "backbone": backbone, "mel": MelConfig(**mel)})
        check_model_config(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return config


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_model_config(config: ModelConfig) -> None:
    """Raise ``ValueError`` naming the first field of ``config`` of the wrong type or beyond its limit
    (:data:`SIZE_LIMITS`, :data:`MEL_LIMITS`), before anything is built from it.

    The values each backbone accepts beyond that (``qk_norm``, ``skip_connect_type``, ...) are the
    backbone's own checks.
    """
    for key, most in SIZE_LIMITS.items():
        value, least = getattr(config, key), 0 if key == "conv_layers" else 1
        if (value is not None or key not in _MAY_BE_NONE) and not (_is_int(value) and least <= value <= most):
            raise ValueError(f"{key} must be an integer from {least} to {most}, got {value!r}")
    if not (_is_number(config.ff_mult) and 0 < config.ff_mult <= 64):
        raise ValueError(f"ff_mult must be a number above 0, at most 64, got {config.ff_mult!r}")
    if not (_is_number(config.dropout) and 0 <= config.dropout < 1):
        raise ValueError(f"dropout must be a number from 0 to below 1, got {config.dropout!r}")
    for key in _FLAGS:
        if not isinstance(getattr(config, key), bool):
            raise ValueError(f"{key} must be true or false, got {getattr(config, key)!r}")
    for key in _NAMES:
        value = getattr(config, key)
        if not isinstance(value, str) and not (value is None and key in _MAY_BE_NONE):
            raise ValueError(f"{key} must be a name (a string), got {value!r}")
    if not isinstance(config.mel, MelConfig):
        raise ValueError(f"mel must be the mel front end's settings, got {config.mel!r}")
    for key, most in MEL_LIMITS.items():
        value = getattr(config.mel, key)
        if not (_is_int(value) and 1 <= value <= most):
            raise ValueError(f"mel.{key} must be an integer from 1 to {most}, got {value!r}")
    if config.mel.win_length > config.mel.n_fft:
        raise ValueError(f"mel.win_length ({config.mel.win_length}) must not exceed mel.n_fft ({config.mel.n_fft})")
    if not isinstance(config.mel.mel_spec_type, str):
        raise ValueError(f"mel.mel_spec_type must be a name (a string), got {config.mel.mel_spec_type!r}")
