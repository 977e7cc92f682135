"""Safetensors files of flowtts's small networks (recogniser, vocoder, preference model): tensors + string facts.

Each network's module decides its format key and what its metadata holds; this module only writes a state
dict with string metadata atomically (optionally in another precision) and reads one back with the errors a
user can act on.
"""

from __future__ import annotations

import json
import os

import torch


def write_tensor_file(path: str | os.PathLike, tensors: dict, metadata: dict, dtype: torch.dtype | None = None) -> None:
    """Write ``tensors`` (a state dict) atomically with ``metadata`` (values not already strings become JSON).

    ``dtype`` stores the floating tensors in another precision (``torch.float16`` halves the file).
    """
    from safetensors.torch import save_file

    from flowtts.utils.files import atomic_output

    strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    stored = {}
    for name, value in tensors.items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        stored[name] = value.contiguous()
    with atomic_output(path) as tmp:
        save_file(stored, tmp, metadata=strings)


def read_tensor_file(path: str | os.PathLike, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file; ``what`` names the kind of file in errors.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file cannot be read as safetensors.
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
    return tensors, metadata


def load_fitting(module: torch.nn.Module, tensors: dict, path: str | os.PathLike, what: str) -> None:
    """Load ``tensors`` into ``module`` as float32 when their names and shapes are exactly the module's.

    Raises:
        ValueError: A tensor missing, extra or of another shape (the first few named), for ``what`` at ``path``.
    """
    expected = module.state_dict()
    wrong = sorted(k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape)
    if wrong or set(tensors) - set(expected):
        extra = sorted(set(tensors) - set(expected))
        raise ValueError(f"{os.fspath(path)}: tensors do not fit its {what} config (mismatched: {(wrong + extra)[:5]})")
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
