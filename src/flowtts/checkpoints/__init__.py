"""Load official F5-TTS checkpoints and save/load flowtts's own self-describing format."""

from flowtts.checkpoints.loader import load, save

__all__ = ["load", "save"]
