"""Write a flowtts model in F5-TTS's own layout, for upstream's tools (``f5-tts_infer-cli``, its app, its trainer).

Three files: the weights as upstream's ``.safetensors`` (the bare EMA state dict: flowtts's parameter
names are upstream's, and the flowtts metadata rides along, so :func:`flowtts.load` still reads the file
alone), the vocabulary as ``vocab.txt`` (one token per line, id = line), and the architecture as a model
config in the layout of upstream's ``configs/*.yaml`` (``model.backbone``, ``model.arch``,
``model.mel_spec``, ``model.tokenizer``), for ``f5-tts_infer-cli --model_cfg``. The config is written
in JSON syntax, which every YAML reader (upstream uses OmegaConf) accepts.
"""

from __future__ import annotations

import dataclasses
import json
import os

from flowtts.config import MelConfig
from flowtts.utils.files import atomic_output


def _number(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


def upstream_config(model, name: str) -> dict:
    """The model config upstream's tools read (``configs/<name>.yaml``'s ``model`` section and its name)."""
    config = model.config
    arch = {k: _number(v) for k, v in config.backbone_kwargs().items() if k not in ("mel_dim", "text_num_embeds")}
    arch.update(attn_backend="torch", attn_mask_enabled=False)
    if config.backbone == "DiT":  # upstream's UNetT has no such argument
        arch["checkpoint_activations"] = False
    return {
        "model": {
            "name": name,
            "tokenizer": "custom",
            "tokenizer_path": "vocab.txt",
            "backbone": config.backbone,
            "arch": arch,
            "mel_spec": dataclasses.asdict(config.mel),
            "vocoder": {"is_local": False, "local_path": None},
        }
    }


def export_upstream(model, out_dir: str, *, name: str = "model", dtype=None, overwrite: bool = False) -> dict:
    """Write ``model`` as ``<name>.safetensors``, ``vocab.txt`` and ``<name>.yaml`` under ``out_dir``.

    Args:
        model: A flowtts :class:`~flowtts.CFM` with its ``config`` (built or loaded by flowtts).
        out_dir: Directory (created).
        name: Stem of the weights and config files (the config's ``model.name``).
        dtype: Stored precision of the weights (default: as they are).
        overwrite: Replace existing files; otherwise an existing one is an error and nothing is written.

    Returns:
        ``{"weights": path, "vocab": path, "config": path, "notes": [str, ...]}``: the notes say what
        upstream's tools will not take from the model (a distilled student's sampling settings, a mel
        front end other than the one upstream's inference hard-codes).

    Raises:
        ValueError: A model without a character vocabulary (upstream's inference reads a ``vocab.txt``)
            or config, a bad ``name``.
        FileExistsError: A file exists and ``overwrite`` is not set.
    """
    from flowtts.checkpoints.loader import save
    from flowtts.sampling.recipe import SamplingRecipe
    from flowtts.text import save_vocab

    if model.config is None:
        raise ValueError("model has no flowtts config (build it with build_model or load it with flowtts.load)")
    if model.vocab_char_map is None:
        raise ValueError(
            "model reads UTF-8 bytes and has no vocabulary; F5-TTS's inference reads a vocab.txt, so it cannot be "
            "exported for upstream's tools"
        )
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    paths = {
        "weights": os.path.join(out_dir, f"{name}.safetensors"),
        "vocab": os.path.join(out_dir, "vocab.txt"),
        "config": os.path.join(out_dir, f"{name}.yaml"),
    }
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); overwrite=True (flowtts export --force) replaces them")
    notes = []
    recipe = SamplingRecipe.from_metadata(model.metadata)
    if recipe is not None:
        notes.append(
            "a distilled student: upstream samples it with its own defaults (32 steps, cfg 2, sway -1) unless told "
            f"otherwise, and has no option for its time grid {recipe.sample_kwargs().get('t_grid')}; it was "
            f"trained for cfg_strength={recipe.cfg_strength}"
        )
    # F5-TTS's inference hard-codes MelConfig's defaults, all but the mel type (vocos or bigvgan).
    mel, default = model.config.mel, MelConfig()
    different = [
        k for k in dataclasses.asdict(default) if k != "mel_spec_type" and getattr(mel, k) != getattr(default, k)
    ]
    if different:
        notes.append(f"mel front end differs from the one F5-TTS's inference hard-codes in {', '.join(different)}")
    os.makedirs(out_dir, exist_ok=True)
    save(model, paths["weights"], dtype=dtype)
    save_vocab(model.vocab_char_map, paths["vocab"])
    with atomic_output(paths["config"]) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(upstream_config(model, name), f, indent=2)
            f.write("\n")
    return {**paths, "notes": notes}
