"""Import upstream F5-TTS's model code for parity tests, when the ``f5-tts`` package is installed.

Upstream's ``f5_tts.model`` package imports its trainer (wandb, datasets, accelerate) and its mel
module imports torchaudio, none of which the comparison needs. We register placeholders for
torchaudio/wandb and load the model subpackage without running its ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types


def load_upstream():
    """Return ``(CFM, DiT)`` of upstream F5-TTS, or ``None`` when it is not installed."""
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or spec.submodule_search_locations is None:
        return None
    for name in ("torchaudio", "wandb"):
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = types.ModuleType(name)
    try:
        if "f5_tts.model" not in sys.modules:
            root = list(spec.submodule_search_locations)[0]
            package = types.ModuleType("f5_tts.model")
            package.__path__ = [os.path.join(root, "model")]
            sys.modules["f5_tts.model"] = package
        cfm = importlib.import_module("f5_tts.model.cfm")
        dit = importlib.import_module("f5_tts.model.backbones.dit")
    except ImportError:
        return None
    return cfm.CFM, dit.DiT


def load_upstream_unett():
    """Upstream's E2-TTS backbone ``UNetT``, or ``None`` when F5-TTS is not installed."""
    if load_upstream() is None:
        return None
    try:
        return importlib.import_module("f5_tts.model.backbones.unett").UNetT
    except ImportError:
        return None


def random_pair(theirs_backbone, ours_backbone, config: dict, seed: int = 0, std: float = 0.05):
    """Upstream's ``CFM(theirs_backbone(**config))`` with random weights, and flowtts's with the same state dict.

    Every floating tensor but the rotary ``inv_freq`` is drawn from N(0, std) (upstream zero-initialises
    output layers, which would make comparisons trivial); flowtts loads the state dict strictly.
    """
    import torch

    from flowtts import CFM

    theirs_cfm, _ = load_upstream()
    theirs = theirs_cfm(theirs_backbone(**config))
    state = theirs.state_dict()
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if value.is_floating_point() and not key.endswith("inv_freq"):
            value.copy_(torch.randn(value.shape, generator=g) * std)
    ours = CFM(ours_backbone(**config))
    ours.load_state_dict(state, strict=True)
    return theirs, ours
