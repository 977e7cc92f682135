"""flowtts: F5-TTS-compatible flow-matching TTS with a sampler that is differentiable on demand.

Imports are lazy: ``import flowtts`` does no work and pulls in nothing heavy until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "CFM": "flowtts.model.cfm",
    "F5TTS": "flowtts.api",
    "DiT": "flowtts.model.dit",
    "UNetT": "flowtts.model.unett",
    "MelSpec": "flowtts.model.mel",
    "integrate": "flowtts.sampling.solvers",
    "load": "flowtts.checkpoints.loader",
    "load_recognizer": "flowtts.eval.recognizer",
    "save": "flowtts.checkpoints.loader",
    "quantize": "flowtts.model.quantize",
    "build_model": "flowtts.model.build",
    "PRESETS": "flowtts.config",
    "ModelConfig": "flowtts.config",
}

__all__ = [
    "CFM",
    "F5TTS",
    "PRESETS",
    "DiT",
    "MelSpec",
    "ModelConfig",
    "UNetT",
    "build_model",
    "integrate",
    "load",
    "load_recognizer",
    "quantize",
    "save",
]

if TYPE_CHECKING:  # pragma: no cover
    from flowtts.api import F5TTS
    from flowtts.checkpoints.loader import load, save
    from flowtts.config import PRESETS, ModelConfig
    from flowtts.eval.recognizer import load_recognizer
    from flowtts.model.build import build_model
    from flowtts.model.cfm import CFM
    from flowtts.model.dit import DiT
    from flowtts.model.mel import MelSpec
    from flowtts.model.quantize import quantize
    from flowtts.model.unett import UNetT
    from flowtts.sampling.solvers import integrate


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowtts' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
