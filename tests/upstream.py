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
