"""torch.distributed plumbing: one code path for a single process and for torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> DistEnv:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), else a single-process env.

    Uses NCCL with one GPU per local rank when CUDA is available, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device or "cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def wrap(model: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, the model itself otherwise."""
    if not env.distributed:
        return model
    ids = [env.device.index] if env.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def mean_over_ranks(value: torch.Tensor, env: DistEnv) -> float:
    """Average of a scalar over ranks (the value itself in one process)."""
    if not env.distributed:
        return float(value)
    value = value.detach().float().reshape(1).to(env.device)
    dist.all_reduce(value)
    return float(value) / env.world_size


def barrier(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()


def average_gradients(parameters, env: DistEnv) -> None:
    """Average the gradients of ``parameters`` over ranks in place (nothing in one process): what
    DistributedDataParallel does, for loops that run several models' updates in one step."""
    if not env.distributed:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= env.world_size
