"""Model stack: mel front end, DiT (F5-TTS) and UNetT (E2-TTS) backbones, CFM wrapper."""

from flowtts.model.cfm import CFM
from flowtts.model.dit import DiT
from flowtts.model.mel import MelSpec
from flowtts.model.unett import UNetT

__all__ = ["CFM", "DiT", "MelSpec", "UNetT"]
