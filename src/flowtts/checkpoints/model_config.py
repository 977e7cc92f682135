"""F5-TTS model config files (``configs/*.yaml``, ``--model_cfg``) read into a :class:`ModelConfig`.

Facts of the format: the ``model`` section names the ``backbone`` class (``DiT``, ``UNetT`` or
``MMDiT``), its keyword arguments under ``arch`` (missing ones take the class's defaults, which are not
the published presets': ``ff_mult=4``, ``text_dim=None``, ``conv_layers=0``, ...), and the mel front
end under ``mel_spec``; the vocabulary size comes from the checkpoint. ``attn_backend``,
``attn_mask_enabled`` and ``checkpoint_activations`` are run-time choices, not architecture.
"""

from __future__ import annotations

import json
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
            ``arch`` key it does not know or one that does not belong to the backbone, or a bad value.
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
        return ModelConfig(**{**_UPSTREAM_DEFAULTS, **arch, "backbone": backbone, "mel": MelConfig(**mel)})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def carries_architecture(path: str | os.PathLike) -> bool:
    """Whether ``path`` describes its own architecture (``builtin*`` or a flowtts ``.safetensors``), so that a
    model config file given with it does not apply."""
    from flowtts.checkpoints.loader import read_metadata

    path = os.fspath(path)
    if path.startswith("builtin"):
        return True
    return path.endswith(".safetensors") and os.path.isfile(path) and bool(read_metadata(path))
