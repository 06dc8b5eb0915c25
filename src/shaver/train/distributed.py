"""Data-parallel training with torch.distributed (launched by ``torchrun``).

Each rank takes a shard of every epoch's permutation; dense gradients are averaged by
``DistributedDataParallel``, the row-sparse ones of lazy Adam's embedding tables by
:meth:`DistContext.average_row_grads` (dense collectives only: no sparse tensor reaches the
backend); rank 0 writes checkpoints; metrics are gathered so every rank takes the same
early-stopping decision. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from shaver.train.device import pick_device
from shaver.train.optim import coalesce_rows


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

    def average_row_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Average the row-sparse gradients of ``params`` (embedding tables, under lazy Adam)
        over all ranks, with dense collectives only.

        Each ``p.grad`` (sparse COO over dim 0; ``None`` counts as no rows) becomes the
        coalesced mean over ranks on the union of the rows any rank looked up: what DDP's
        sparse all-reduce computes, without handing the backend a sparse tensor (DDP's
        sparse all-reduce on gloo, which rewrites each sparse gradient on gloo's worker
        threads while backward goes on, crashed natively now and then: a ``malloc()`` abort,
        a segfault inside backward). ``params`` must be the same tables, in the same order,
        on every rank. Every rank ends with the same tensors.

        Cost per call: two all-gathers whatever the number of tables (the row counts, world x
        tables int64; the rows, world x the largest rank's total, int64), then one all-reduce
        per table of its ``(union rows, dim)`` values: the rows touched, never the table.
        """
        if not self.enabled or not params:
            return
        comm = self._comm_device()
        seen: dict = {}
        local = [coalesce_rows(p.grad, seen) if p.grad is not None
                 else (torch.zeros(0, dtype=torch.long, device=p.device), None) for p in params]
        counts = self._all_gather(torch.tensor([len(rows) for rows, _ in local], device=comm))
        totals = counts.sum(1).tolist()
        flat = torch.zeros(max(1, *totals), dtype=torch.long, device=comm)
        flat[: totals[self.rank]] = torch.cat([rows.to(comm) for rows, _ in local])
        gathered = self._all_gather(flat)
        peers = [gathered[r, : totals[r]].split(counts[r].tolist()) for r in range(self.world)]
        for t, (p, (rows, values)) in enumerate(zip(params, local)):
            union = torch.unique(torch.cat([peer[t] for peer in peers]), sorted=True)
            if not len(union):
                p.grad = None  # no rank looked this table up: every rank skips it alike
                continue
            summed = torch.zeros((len(union), *p.shape[1:]), dtype=p.dtype, device=comm)
            if values is not None:
                summed[torch.searchsorted(union, rows.to(comm))] = values.to(comm)
            dist.all_reduce(summed)
            p.grad = torch.sparse_coo_tensor(
                union.to(p.device).unsqueeze(0), summed.div_(self.world).to(p.device), p.shape,
                is_coalesced=True, check_invariants=False)  # sorted, unique, in range

    def _all_gather(self, local: torch.Tensor) -> torch.Tensor:
        """``(world, *local.shape)``: every rank's ``local`` (same shape on all ranks)."""
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.stack(parts)

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


@contextmanager
def data_parallel(model: nn.Module, ctx: DistContext,
                  own: Sequence[nn.Parameter] = ()) -> Iterator[nn.Module]:
    """What a training step calls: ``model`` wrapped by ``DistributedDataParallel`` under
    several processes, ``model`` itself with one.

    The parameters in ``own`` are left out of DDP: their gradients are averaged by
    :meth:`DistContext.average_row_grads` after each backward, and their values are broadcast
    from rank 0 here, as DDP broadcasts the others'. On exit ``model`` carries no DDP marks
    (a later DDP wrap of it ignores nothing).
    """
    if not ctx.enabled:
        yield model
        return
    mine = {id(p) for p in own}
    names = [name for name, p in model.named_parameters() if id(p) in mine]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    try:
        for p in own:
            dist.broadcast(p.data, src=0)
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        yield DistributedDataParallel(model, device_ids=ids)
    finally:
        del model._ddp_params_and_buffers_to_ignore
        for p in model.parameters():
            if hasattr(p, "_ddp_ignored"):
                del p._ddp_ignored


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
