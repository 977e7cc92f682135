"""Model stack: mel front end, DiT backbone, CFM wrapper."""

from flowtts.model.cfm import CFM
from flowtts.model.dit import DiT
from flowtts.model.mel import MelSpec

__all__ = ["CFM", "DiT", "MelSpec"]
