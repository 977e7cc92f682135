"""The floating dtypes flowtts runs in, by name: the one table every option and file uses.

Importing this module imports nothing heavy (the CLI reads the names to build its options).
"""

from __future__ import annotations

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype):
    """``"float32"``/``"bfloat16"``/``"float16"`` (or a torch dtype, or ``None``) -> torch dtype (or ``None``).

    Raises:
        ValueError: Another name.
    """
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    return getattr(torch, dtype)
