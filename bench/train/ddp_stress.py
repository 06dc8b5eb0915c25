"""Stress loop of two-rank lazy-Adam steps: DDP's sparse all-reduce against shaver's dense
row averaging, on gloo.

Two spawned ranks (CPU, one thread each) train the DeepFM of ``tests/test_train_ddp.py``
(4 fields, 33 rows, d=4, MLP 16-16) on random ids, 128 rows a rank per step, with lazy Adam
and, as ``fit`` does on CPU, a dense all-reduce of the loss after every step. ``--path``:

* ``sparse``: the whole model in ``DistributedDataParallel`` with sparse embedding
  gradients: DDP all-reduces them with gloo's sparse all-reduce (what training did before);
* ``rows``: :func:`shaver.train.distributed.data_parallel` + ``average_row_grads`` (what
  training does now: the tables outside DDP, their rows averaged with dense collectives).

A run passes when both ranks finish ``--steps`` steps; a rank killed by a signal (a native
crash) fails it. Usage::

    python bench/train/ddp_stress.py --path sparse --steps 20000 --runs 2
    python bench/train/ddp_stress.py --path rows --steps 20000 --runs 2
    python bench/train/ddp_stress.py --path rows --quick      # 1 run of 200 steps
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from shaver.models.registry import build_model
from shaver.train.distributed import DistContext, data_parallel
from shaver.train.optim import make_optimizer, sparse_embeddings

FIELD_DIMS = (12, 9, 7, 5)
BATCH = 128


def worker(rank: int, port: int, path: str, steps: int, seed: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ctx = DistContext(rank=rank, world=2)
    model = build_model("deepfm", FIELD_DIMS, seed=seed, embed_dim=4, mlp_dims=[16, 16])
    gen = torch.Generator().manual_seed(seed * 2 + rank)
    opt = make_optimizer(model, 1e-2, 1e-6, torch.device("cpu"), "lazy-adam")
    with sparse_embeddings(model) as switched:
        own = [m.weight for m in switched] if path == "rows" else []
        with data_parallel(model, ctx, own) as step_model:  # own=[]: all of it in DDP
            for _ in range(steps):
                x = torch.stack([torch.randint(0, d, (BATCH,), generator=gen)
                                 for d in FIELD_DIMS], 1)
                y = torch.randint(0, 2, (BATCH,), generator=gen).float()
                loss = F.binary_cross_entropy_with_logits(step_model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                ctx.average_row_grads(own)
                opt.step()
                ctx.sum([float(loss.detach()), float(BATCH)])
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", choices=["sparse", "rows"], required=True)
    ap.add_argument("--steps", type=int, default=20000, help="steps a run (default 20000)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the first run (then +1)")
    ap.add_argument("--quick", action="store_true", help="one run of 200 steps (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.runs = 200, 1
    print(f"torch {torch.__version__}, path {args.path}, {args.runs} run(s) of {args.steps} "
          f"two-rank steps (gloo, CPU)", flush=True)
    failed = 0
    for i in range(args.runs):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start = time.perf_counter()
        try:
            mp.spawn(worker, args=(port, args.path, args.steps, args.seed + i), nprocs=2,
                     join=True)
            status = "ok"
        except mp.ProcessExitedException as exc:
            failed += 1
            status = f"FAILED: a rank died of {exc.signal_name or f'exit {exc.exit_code}'}"
        print(f"run {i + 1}/{args.runs} (seed {args.seed + i}): {status} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{args.runs} run(s), {failed} failed, {args.runs * args.steps} steps asked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
