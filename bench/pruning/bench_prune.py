"""Seconds to produce a pruned model for one NEW budget from a stored attribution.

Command (the lead's quiet-machine run; --quick for a smoke test)::

    .venv/bin/python bench/pruning/bench_prune.py            # 1M x 16 table (Criteo-shaped)
    .venv/bin/python bench/pruning/bench_prune.py --quick    # 100k x 16

Measured in one run, medians of --repeats:

* load: reading the attribution file (safetensors) once;
* sort: the one-time sort of the n*d scores (``open_chooser`` with the paper's method, then
  its ranking's :class:`~shaver.table.families.TierPlanner`: the stable sort of entries and
  of rows, kept by the chooser for every later budget);
* cut: one new budget from the sorted order -> pruned DeepFM (``cut`` with the paper's fixed
  candidate: tier map + plan module copy), for sparsity budgets, and for a byte budget (the
  chooser's binary search over the size oracle ``plan_bytes``); target < 1 s at 1M x 16;
* baseline "re-sort per budget": sort + cut for every budget (what a tool without the stored
  order pays); ratio = cut / (sort + cut);
* one training epoch of DeepFM on a Criteo-shaped dataset (36.7M train rows = 80 % of
  Criteo's 45.8M), EXTRAPOLATED from --train-batches measured Adam steps at batch 4096 on
  random ids (the data loader is not included, so the epoch estimate is a lower bound).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shaver.attribution.result import Attribution
from shaver.models.registry import build_model
from shaver.pruning.api import cut, open_chooser
from shaver.pruning.candidates import FP32
from shaver.pruning.rankings import PAPER
from shaver.table.budget import Budget
from shaver.table.size import plan_bytes
from shaver.train.checkpoint import model_fingerprint
from shaver.train.device import pick_device

CRITEO_TRAIN_ROWS = int(45_840_617 * 0.8)
FIELDS = 39


def field_dims_for(rows: int, fields: int = FIELDS, seed: int = 0) -> list[int]:
    """Criteo-like skewed field sizes (a few huge fields, many small) summing to ``rows``."""
    rng = np.random.default_rng(seed)
    weights = np.sort(rng.pareto(0.8, fields) + 0.01)
    dims = np.maximum(2, np.floor(weights / weights.sum() * rows)).astype(int)
    dims[-1] += rows - dims.sum()
    return dims.tolist()


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def train_epoch_seconds(model, batches: int, batch_size: int, seed: int,
                        device: torch.device) -> float:
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *np.cumsum(model.field_dims)[:-1]])
    dims = torch.tensor(model.field_dims)
    model = copy.deepcopy(model).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    times = []
    for step in range(batches + 1):
        x = ((torch.rand(batch_size, len(dims), generator=gen) * dims).long() + offsets).to(device)
        y = (torch.rand(batch_size, generator=gen) < 0.25).float().to(device)
        sync()
        start = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if step:  # the first step warms up allocators
            times.append(time.perf_counter() - start)
    return statistics.median(times) * CRITEO_TRAIN_ROWS / batch_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="embedding rows")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    ap.add_argument("--device", default=None,
                    help="device of the training-epoch estimate (auto: cuda when available); "
                    "pruning itself runs on the CPU")
    ap.add_argument("--quick", action="store_true", help="100k rows, 3 repeats, 3 batches")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats, args.train_batches = 100_000, 3, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    dims = field_dims_for(args.rows)
    model = build_model("deepfm", dims, embed_dim=args.dim).eval()
    n, d = args.rows, args.dim
    rng = np.random.default_rng(0)
    phi = torch.from_numpy(rng.standard_normal((n, d), dtype=np.float32))
    attribution = Attribution(phi=phi, stderr=torch.zeros(n, d), count=1,
                              codebook=torch.zeros(len(dims), d), placeholder="codebook",
                              model_fingerprint=model_fingerprint(model), field_dims=dims)
    with tempfile.TemporaryDirectory() as tmp:
        path = attribution.save(Path(tmp) / "attribution.safetensors")
        t_load, stored = median_time(lambda: Attribution.load(path), args.repeats)

    def sorted_once():
        chooser, names = open_chooser(model, stored, "shaver", dataset=None)
        chooser.planner(PAPER)  # the one stable sort, kept for every later budget
        return chooser, names

    def new_budget(budget: Budget):
        return cut(chooser, names, budget, "shaver", evaluate=False)

    t_sort, (chooser, names) = median_time(sorted_once, args.repeats)
    sparsities = [0.5, 0.8, 0.95, 0.99, 0.999][: max(args.repeats, 1)]
    cut_times = []
    for s in sparsities:
        start = time.perf_counter()
        new_budget(Budget.sparsity(s))
        cut_times.append(time.perf_counter() - start)
    t_cut = statistics.median(cut_times)
    full, _ = plan_bytes(model, np.ones((n, d), np.uint8), FP32.tiers)
    empty, _ = plan_bytes(model, np.zeros((n, d), np.uint8), FP32.tiers)
    byte_budget = Budget.bytes_(int(empty + 0.2 * (full - empty)))
    t_bytes, result = median_time(lambda: new_budget(byte_budget), max(1, args.repeats // 2))
    t_resort = t_sort + t_cut
    device = pick_device(args.device)
    t_epoch = train_epoch_seconds(model, args.train_batches, 4096, seed=0, device=device)
    print(f"table {n} x {d} ({len(dims)} fields), DeepFM, torch threads {torch.get_num_threads()}")
    print(f"load stored attribution       {t_load:8.3f} s (once)")
    print(f"sort scores once              {t_sort:8.3f} s (once)")
    print(f"new sparsity budget           {t_cut:8.3f} s  (median of {len(cut_times)}; "
          f"target < 1 s)")
    print(f"new byte budget ({byte_budget.label}) {t_bytes:8.3f} s  (binary search, kept "
          f"{result.kept}, {result.artifact_bytes} bytes)")
    print(f"baseline: re-sort per budget  {t_resort:8.3f} s  -> stored order is "
          f"{t_resort / t_cut:.1f}x faster")
    print(f"one DeepFM training epoch     {t_epoch:8.1f} s  (extrapolated from "
          f"{args.train_batches} Adam steps at batch 4096 on {device.type} to {CRITEO_TRAIN_ROWS} rows; no "
          f"data loading) -> a new budget costs {t_cut / t_epoch:.2e} of an epoch")


if __name__ == "__main__":
    main()
