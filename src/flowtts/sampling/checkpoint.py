"""Activation checkpointing of one function call, built on saved-tensor hooks.

:func:`checkpoint` runs ``fn(*args)`` keeping none of the tensors autograd would save for backward;
the first time backward needs one of them, ``fn(*args)`` is run again (with the random-number and
autocast state of the first run, so dropout draws the same masks) and the saved tensors are taken
from that run, each released as soon as backward has used it. Gradients reach everything ``fn``
touched that requires grad -- its arguments, parameters and tensors it captured -- exactly as without
checkpointing.

Why not ``torch.utils.checkpoint``: its non-reentrant mode (the one with these semantics) imports
``torch._dynamo`` on its first call, which costs about 80 MiB of resident memory and a second of
start-up in every process that checkpoints -- more than a whole step's activations of a 33M-parameter
DiT at 300 frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch


class _Recomputation:
    """State of one checkpointed call: its inputs, the RNG/autocast state it ran under, and recomputed tensors."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.devices = sorted(
            {a.device for a in args if torch.is_tensor(a) and a.device.type == "cuda"}, key=lambda d: d.index or 0
        )
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = [torch.cuda.get_rng_state(d) for d in self.devices]
        self.autocast = [
            (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
            for device in ("cpu", "cuda")
            if device == "cpu" or torch.cuda.is_available()
        ]
        self.packed = 0
        self.saved: dict[int, torch.Tensor] = {}

    def pack(self, tensor: torch.Tensor) -> int:
        index = self.packed
        self.packed += 1
        return index

    def unpack(self, index: int) -> torch.Tensor:
        if index not in self.saved:
            self.recompute()
        return self.saved.pop(index)

    def recompute(self) -> None:
        count = 0

        def keep(tensor: torch.Tensor) -> None:
            nonlocal count
            self.saved[count] = tensor.detach()
            count += 1

        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=self.devices))
            torch.set_rng_state(self.cpu_rng)
            for device, state in zip(self.devices, self.cuda_rng):
                torch.cuda.set_rng_state(state, device)
            for device, enabled, dtype in self.autocast:
                stack.enter_context(torch.autocast(device, dtype=dtype, enabled=enabled))
            stack.enter_context(torch.enable_grad())
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(keep, _never_unpacked))
            self.fn(*self.args, **self.kwargs)
        if count != self.packed:
            raise RuntimeError(
                f"a checkpointed function saved {self.packed} tensors for backward when it ran and {count} when "
                "it was recomputed; it must run the same operations both times (no data-dependent control flow "
                "on state that changed in between)"
            )


def _never_unpacked(index: Any) -> torch.Tensor:
    raise RuntimeError("internal error: a recomputation's own graph was used for backward")


def checkpoint(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, recomputed during backward instead of keeping its activations.

    Args:
        fn: The function; it must run the same operations when called again with the same arguments.
        *args: Its positional arguments (kept until backward; the step's input state, typically).
        **kwargs: Its keyword arguments.

    Returns:
        What ``fn`` returns. Without grad mode it is simply ``fn(*args, **kwargs)``.
    """
    if not torch.is_grad_enabled():
        return fn(*args, **kwargs)
    frame = _Recomputation(fn, args, kwargs)
    with torch.autograd.graph.saved_tensors_hooks(frame.pack, frame.unpack):
        return fn(*args, **kwargs)
