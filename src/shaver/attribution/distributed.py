"""torch.distributed glue: each rank attributes its shard of every round; the accumulators'
increments are all-reduced, so every rank holds the same merged state and takes the same
stopping decision. Launch with ``torchrun --nproc_per_node N -m shaver attribute ...``
(gloo on CPU, nccl on GPU); without an initialised process group it is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's rank among ``world`` processes (0 of 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> DistContext:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, *tensors: torch.Tensor) -> None:
        """Sum each tensor over ranks, in place."""
        if self.world > 1:
            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        """Element-wise max of a flags tensor over ranks (in place; returns it)."""
        if self.world > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags


def init_from_env(device: str | None = None) -> DistContext:
    """Initialise the process group from torchrun's environment (WORLD_SIZE > 1), else no-op.

    The backend is nccl when CUDA is used, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device in (None, "auto") or "cuda" in device)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return DistContext.current()


def rank_device(device: torch.device) -> torch.device:
    """On CUDA under torchrun, this rank's GPU (LOCAL_RANK); otherwise ``device``."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device
