"""Data preparation, flow-matching training (single process or torchrun/DDP)."""
