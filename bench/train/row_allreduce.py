"""What averaging lazy Adam's row gradients over ranks costs, at Criteo scale.

Two local ranks (gloo, CPU, one thread each) hold DeepFM's two embedding tables of the
Criteo-shaped benchmark (``bench_train.py``: 39 fields, ~1M rows, d=16 and the first-order
d=1 table) and, at every step, the row-sparse gradients of a batch of Zipf-like ids (global
batch 2048, 1024 rows a rank). Timed, median over the steps:

* ``dense``: :meth:`shaver.train.distributed.DistContext.average_row_grads`, what training
  runs now: all-gather the rows each rank touched, all-reduce the values of their union as
  one dense ``(union rows, d)`` tensor per table;
* ``sparse``: ``dist.all_reduce`` of each sparse gradient (gloo's sparse all-reduce, what
  DDP ran on its worker threads before; called here directly, from the main thread).

Also printed: the rows touched (one rank, both ranks) and the bytes each rank receives
by each path (payload only). Usage::

    python bench/train/row_allreduce.py                  # 1M rows, 20 steps
    python bench/train/row_allreduce.py --vocab 10000000 --steps 10
    python bench/train/row_allreduce.py --quick          # 100k rows, 3 steps
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_train import criteo_field_dims
from torch import nn

from shaver.train.distributed import DistContext

WORLD = 2


def batch_ids(dims: list[int], rows: int, seed: int, rank: int, step: int) -> torch.Tensor:
    """(rows, fields) global ids, Zipf-like per field as ``bench_train.make_dataset`` draws."""
    rng = np.random.default_rng([seed, rank, step])
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
    local = np.stack([np.minimum(np.floor(d ** rng.random(rows)).astype(np.int64) - 1, d - 1)
                      for d in dims], axis=1)
    return torch.from_numpy(local + offsets)


def set_grads(tables: list[nn.Embedding], x: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Backward of a seeded random linear loss: each table gets an embedding's sparse grad."""
    gen = torch.Generator().manual_seed(seed)
    for table in tables:
        table.weight.grad = None
        out = table(x)
        (out * torch.randn(out.shape, generator=gen)).sum().backward()
    return [t.weight.grad for t in tables]


def timed(fn, *args) -> float:
    """Milliseconds of ``fn(*args)`` on this rank, between two barriers."""
    dist.barrier()
    start = time.perf_counter()
    fn(*args)
    dist.barrier()
    return (time.perf_counter() - start) * 1e3


def sparse_all_reduce(grads: list[torch.Tensor]) -> None:
    for grad in grads:
        dist.all_reduce(grad / WORLD)


def worker(rank: int, port: int, args: argparse.Namespace, out: mp.SimpleQueue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    dims = criteo_field_dims(args.vocab)
    tables = [nn.Embedding(sum(dims), d, sparse=True) for d in (16, 1)]
    params = [t.weight for t in tables]
    ctx = DistContext(rank=rank, world=WORLD)
    record: dict[str, list[float]] = {k: [] for k in
                                      ("dense", "sparse", "local", "union", "dense_mb",
                                       "sparse_mb")}
    for step in range(args.steps):
        x = batch_ids(dims, args.batch // WORLD, args.seed, rank, step)
        grads = set_grads(tables, x, args.seed + step)
        local = [g.coalesce() for g in grads]
        record["sparse"].append(timed(sparse_all_reduce, grads))
        for p, g in zip(params, grads):
            p.grad = g
        record["dense"].append(timed(ctx.average_row_grads, params))
        union = params[0].grad._nnz()
        nnz = torch.tensor([g._nnz() for g in local])
        everyone = [torch.empty_like(nnz) for _ in range(WORLD)]
        dist.all_gather(everyone, nnz)
        widest = max(int(n.sum()) for n in everyone)
        others = sum(int(n[0]) for r, n in enumerate(everyone) if r != rank)
        record["local"].append(int(nnz[0]))
        record["union"].append(union)
        # dense: rows gathered (int64, padded to the widest rank) + a ring all-reduce of
        # union x (16 + 1) float32 values, 2 (W-1)/W of it through each rank
        record["dense_mb"].append((widest * 8 * (WORLD - 1)
                                   + 2 * (WORLD - 1) / WORLD * union * 17 * 4) / 1e6)
        # sparse: the other rank's coalesced rows (int64) and values (float32), per table
        record["sparse_mb"].append(others * (8 + 16 * 4 + 8 + 4) / 1e6)
    if rank == 0:
        out.put({k: statistics.median(v) for k, v in record.items()})
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=1_000_000, help="embedding rows (about)")
    ap.add_argument("--batch", type=int, default=2048, help="global batch (default 2048)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="100k rows, 3 steps (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.vocab, args.steps = 100_000, 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(worker, args=(port, args, queue), nprocs=WORLD, join=True)
    r = queue.get()
    print(f"torch {torch.__version__}, {WORLD} ranks (gloo, CPU, 1 thread each), "
          f"{sum(criteo_field_dims(args.vocab)):,} rows, global batch {args.batch}, "
          f"medians over {args.steps} steps")
    print(f"rows touched: {r['local']:,.0f} on rank 0, {r['union']:,.0f} on both")
    print(f"dense (rows all-gathered, union all-reduced): {r['dense']:.1f} ms, "
          f"{r['dense_mb']:.2f} MB received per rank")
    print(f"sparse (gloo's sparse all-reduce):           {r['sparse']:.1f} ms, "
          f"{r['sparse_mb']:.2f} MB received per rank")
    return 0


if __name__ == "__main__":
    sys.exit(main())
