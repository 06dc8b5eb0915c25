"""Data-parallel training with torch.distributed (launched by ``torchrun``).

Each rank takes a shard of every epoch's permutation; gradients are averaged by
``DistributedDataParallel``; rank 0 writes checkpoints; metrics are gathered so every rank
takes the same early-stopping decision. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from shaver.train.device import pick_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (a no-op with one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def gather_rows(self, local: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Concatenate every rank's ``local`` (counts[r], ...) in rank order."""
        if not self.enabled:
            return local
        width = max(counts)
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype,
                             device=self._comm_device())
        padded[: len(local)] = local.to(padded.device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:c] for p, c in zip(parts, counts)]).cpu()

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Copy rank 0's buffers (batch-norm running statistics) to every rank.

        DDP broadcasts buffers before each forward, so after an epoch's last step the
        ranks' running statistics differ by that one step; this makes them equal.
        """
        if not self.enabled:
            return
        for buf in model.buffers():
            if buf.is_floating_point() or buf.dtype == torch.long:
                dist.broadcast(buf.data, src=0)

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def setup(device: str | torch.device | None = None) -> DistContext:
    """The context of this process; initialises the process group when launched by torchrun.

    With ``WORLD_SIZE`` > 1 in the environment (torchrun sets it) and no process group yet,
    one is created: nccl when the device is CUDA (each rank on ``cuda:LOCAL_RANK``), else gloo.
    """
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_initialized() and world_env <= 1:
        return DistContext(device=pick_device(device))
    picked = pick_device(device)
    if picked.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        picked = torch.device("cuda", local_rank)
        torch.cuda.set_device(picked)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if picked.type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), device=picked)


def shard_bounds(rows: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous ``[lo, hi)`` of ``rows`` for ``rank`` (sizes differ by at most one)."""
    base, extra = divmod(rows, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)
