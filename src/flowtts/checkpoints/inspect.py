"""What a model file holds: architecture, size, vocabulary, mel front end, and how it samples and was made."""

from __future__ import annotations

import os
from collections import Counter


def model_facts(model, path: str | os.PathLike | None = None) -> dict:
    """A JSON-ready description of a loaded model (from :func:`flowtts.load`).

    Keys: ``file``, ``format`` (``"flowtts"`` or ``"F5-TTS checkpoint"``), ``preset`` (official files),
    ``backbone``, ``architecture`` (the backbone's arguments), ``parameters``, ``stored_dtypes`` (of the
    file, when it is a ``.safetensors``), ``vocabulary`` (size and kind), ``mel``, ``sampling`` (the
    :class:`flowtts.sampling.recipe.SamplingRecipe` the model is sampled with: a student's own, else F5-TTS's
    defaults)
    and ``metadata`` (what the file records about its making, e.g. ``step``, ``trained_with``).
    """
    import dataclasses

    from flowtts.checkpoints.recorded import CONTINUE_KEY, recorded_flag, recorded_voices
    from flowtts.sampling.recipe import SamplingRecipe

    config = model.config
    vocab = model.vocab_char_map
    if vocab is None:
        kind = "UTF-8 bytes"
    elif any(len(token) > 1 and token.strip() and token[-1].isdigit() for token in vocab):
        kind = "characters and pinyin units"
    else:
        kind = "characters"
    recipe = SamplingRecipe.for_model(model)
    metadata = dict(model.metadata or {})
    facts = {
        "file": os.fspath(path) if path is not None else None,
        "format": "flowtts" if metadata.get("format") == "flowtts" else "F5-TTS checkpoint",
        "preset": model.preset,
        "backbone": config.backbone,
        "architecture": {k: v for k, v in config.backbone_kwargs().items() if k not in ("mel_dim",)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "stored_dtypes": _stored_dtypes(path),
        "vocabulary": {"size": config.text_num_embeds, "kind": kind},
        "mel": dataclasses.asdict(config.mel),
        "sampling": {
            "steps": recipe.steps,
            "cfg_strength": recipe.cfg_strength,
            "sway_sampling_coef": recipe.sway_sampling_coef,
            "t_grid": recipe.t_grid,
        },
        "voices": recorded_voices(model),
        "continues_reference": recorded_flag(model, CONTINUE_KEY) is not False,
        "metadata": {k: v for k, v in metadata.items() if k not in ("format", "format_version")},
    }
    return facts


def _stored_dtypes(path) -> dict[str, int] | None:
    """Tensor count per dtype in a ``.safetensors`` file (read from its header, no weights loaded)."""
    if path is None or not os.fspath(path).endswith(".safetensors") or not os.path.isfile(path):
        return None
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        counts = Counter(str(f.get_slice(k).get_dtype()) for k in f.keys())
    return dict(sorted(counts.items()))


def format_facts(facts: dict, width: int = 100) -> str:
    """:func:`model_facts` as readable lines (long metadata values shortened to ``width``)."""
    arch = ", ".join(f"{k}={v}" for k, v in facts["architecture"].items())
    sampling = facts["sampling"]
    grid = sampling["t_grid"]
    lines = [
        f"file          {facts['file']}",
        f"format        {facts['format']}" + (f" (preset {facts['preset']})" if facts["preset"] else ""),
        f"backbone      {facts['backbone']}: {arch}",
        f"parameters    {facts['parameters'] / 1e6:.2f} M" + (
            f" (stored as {', '.join(f'{d}: {n} tensors' for d, n in facts['stored_dtypes'].items())})"
            if facts["stored_dtypes"] else ""
        ),
        f"vocabulary    {facts['vocabulary']['size']} tokens ({facts['vocabulary']['kind']})",
        "mel           " + ", ".join(f"{k}={v}" for k, v in facts["mel"].items()),
        f"sampling      {sampling['steps']} steps, cfg {sampling['cfg_strength']:g}"
        + (f", grid {[round(t, 4) for t in grid]}" if grid else f", sway {sampling['sway_sampling_coef']}"),
        "voices        " + (
            "not recorded (F5-TTS checkpoints take the voice of the reference clip)" if facts["voices"] is None
            else f"{facts['voices']}" + (" (a clip sets the speaking rate and loudness, not the voice)"
                                         if facts["voices"] == 1 else "")
        ),
        "reference     " + (
            "continued, as F5-TTS does" if facts["continues_reference"]
            else "not continued: the text is spoken unprompted, the clip setting rate and loudness"
        ),
    ]  # fmt: skip
    for key, value in facts["metadata"].items():
        value = str(value).replace("\n", " ")
        lines.append(f"{key:<13} {value if len(value) <= width else value[: width - 3] + '...'}")
    return "\n".join(lines)
