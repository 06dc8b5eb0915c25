"""Training throughput of DeepFM: shaver's trainer vs a loop in the style of the paper's code.

Both train the same DeepFM (d=16, MLP 400-400-400, batch norm, dropout 0.2) with Adam on the
same Criteo-shaped prepared dataset (39 fields, ~1M embedding rows, Zipf-like ids), on the
same device:

* ours: ``shaver.train.loop.fit`` (split held in memory as one tensor, on the GPU when
  there is one; batches are index gathers; fused Adam; loss synced every 25 steps on GPU);
* baseline, as in the authors' research code: a torch ``Dataset`` whose ``__getitem__``
  returns one row (decoded from a uint32 record, offsets added per sample, label as a
  tensor) + ``DataLoader(shuffle=True)`` with default collation, ``.to(device)`` per batch,
  ``BCEWithLogitsLoss``, ``torch.optim.Adam`` defaults, ``loss.item()`` every step. (Their
  records come from LMDB; ours from an in-memory array, which flatters the baseline.)

Throughput = training rows / seconds of the training loop (evaluation excluded), median of
``--repeats`` runs each. Also printed: the model-only floor (forward + backward + fused Adam
on one resident batch, nothing else), which bounds what any trainer reaches with this model. Usage::

    python bench/train/bench_train.py            # 40 steps x 2048 rows, 3 repeats
    python bench/train/bench_train.py --quick    # 6 steps, 2 repeats (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from shaver.data.store import PreparedDataset, write_prepared
from shaver.models.registry import build_model
from shaver.train.device import pick_device
from shaver.train.loop import fit

#: Raw cardinalities of Criteo's 26 categorical fields (Kaggle DAC), scaled down below.
CRITEO_CATEGORICAL = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                      8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                      286181, 105, 142572]


def criteo_field_dims(vocab: int) -> list[int]:
    """13 integer fields (~60 tokens each) + 26 categorical ones scaled to ``vocab`` rows."""
    numeric = [60] * 13
    scale = (vocab - sum(numeric)) / sum(CRITEO_CATEGORICAL)
    return numeric + [max(3, int(c * scale)) for c in CRITEO_CATEGORICAL]


def make_dataset(out: Path, vocab: int, rows: int, seed: int = 0) -> PreparedDataset:
    """Criteo-shaped prepared dataset: Zipf-like local ids (P(k) ~ 1/(k+1)), logistic labels."""
    rng = np.random.default_rng(seed)
    dims = criteo_field_dims(vocab)
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
    total = rows + 2 * 2048
    local = np.stack([np.minimum(np.floor(d ** rng.random(total)).astype(np.int64) - 1, d - 1)
                      for d in dims], axis=1)
    ids = local + offsets
    weights = rng.normal(0, 0.3, sum(dims))
    labels = (rng.random(total) < 1 / (1 + np.exp(-weights[ids].sum(1)))).astype(np.float32)
    row_no = np.arange(total, dtype=np.int64)
    cut = [0, rows, rows + 2048, total]
    splits = {name: (ids[a:b], labels[a:b], row_no[a:b])
              for name, a, b in zip(("train", "val", "test"), cut[:-1], cut[1:])}
    names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    vocab_lists = {n: [str(j) for j in range(d)] for n, d in zip(names, dims)}
    freq = np.bincount(ids[:rows].reshape(-1), minlength=sum(dims))
    return write_prepared(out, field_names=names, vocabularies=vocab_lists, splits=splits,
                          frequencies=freq)


class PaperStyleDataset(Dataset):
    """One sample per ``__getitem__``: a uint32 record [label, local ids...] -> (ids, label)."""

    def __init__(self, data: PreparedDataset):
        x, y = data.arrays("train")
        local = x - data.offsets
        self.records = np.concatenate([y[:, None], local], axis=1).astype(np.uint32)
        self.offsets = data.offsets

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index].astype(np.int64)
        record[1:] += self.offsets
        return record[1:], torch.tensor(record[0], dtype=torch.float32)


def run_baseline(data: PreparedDataset, device: torch.device, batch: int, workers: int,
                 seed: int) -> float:
    """Rows per second of one epoch of the paper-style loop."""
    model = build_model("deepfm", data.field_dims, seed=seed).to(device)
    loader = DataLoader(PaperStyleDataset(data), batch_size=batch, shuffle=True,
                        num_workers=workers, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    criterion = torch.nn.BCEWithLogitsLoss().to(device)
    model.train()
    total, rows, start = 0.0, 0, time.perf_counter()
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        loss = criterion(model(inputs), labels.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        rows += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return rows / (time.perf_counter() - start)


def run_ours(data: PreparedDataset, device: torch.device, batch: int, seed: int) -> float:
    """Rows per second of one epoch of ``shaver.train.loop.fit`` (its own measurement)."""
    model = build_model("deepfm", data.field_dims, seed=seed)
    result = fit(model, data, epochs=1, batch_size=batch, lr=1e-3, weight_decay=1e-6,
                 patience=None, seed=seed, device=device, quiet=True)
    return float(result.history[0]["samples_per_s"])


def run_model_floor(data: PreparedDataset, device: torch.device, batch: int, steps: int,
                    seed: int) -> float:
    """Rows per second of the model's own work alone: forward, backward and fused Adam on
    ONE batch already resident on the device (no data, no shuffling, no loss sync). No
    trainer can beat it with this model and optimiser: it bounds the attainable ratio."""
    from shaver.train.loop import make_optimizer

    model = build_model("deepfm", data.field_dims, seed=seed).to(device).train()
    optimizer = make_optimizer(model, 1e-3, 1e-6, device)
    x, y = (torch.from_numpy(np.asarray(a[:batch])) for a in data.arrays("train"))
    x, y = x.long().to(device), y.float().to(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 steps, 2 repeats")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=1_000_000, help="embedding rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="baseline DataLoader workers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 6, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rows = args.steps * args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        data = make_dataset(Path(tmp) / "criteo-like", args.vocab, rows)
        print(f"dataset: {data.num_fields} fields, {data.num_features} rows, {rows} train "
              f"samples ({time.perf_counter() - started:.1f} s to build); device {device}, "
              f"{torch.get_num_threads()} threads, batch {args.batch_size}", flush=True)
        run_ours(data, device, args.batch_size, seed=99)  # warm-up (lazy imports, allocator)
        ours, base, floor = [], [], []
        for r in range(args.repeats):
            ours.append(run_ours(data, device, args.batch_size, seed=r))
            base.append(run_baseline(data, device, args.batch_size, args.workers, seed=r))
            floor.append(run_model_floor(data, device, args.batch_size, args.steps, seed=r))
            print(f"  repeat {r + 1}: ours {ours[-1]:,.0f} rows/s, baseline "
                  f"{base[-1]:,.0f} rows/s, model-only floor {floor[-1]:,.0f} rows/s",
                  flush=True)
    figures = {"device": str(device), "threads": torch.get_num_threads(),
               "rows": rows, "batch_size": args.batch_size, "vocab": data.num_features,
               "ours_rows_per_s": statistics.median(ours),
               "baseline_rows_per_s": statistics.median(base),
               "model_floor_rows_per_s": statistics.median(floor)}
    figures["speedup"] = figures["ours_rows_per_s"] / figures["baseline_rows_per_s"]
    figures["attainable_speedup"] = figures["model_floor_rows_per_s"] / figures[
        "baseline_rows_per_s"]
    print(f"DeepFM training throughput (median of {args.repeats}): ours "
          f"{figures['ours_rows_per_s']:,.0f} rows/s, paper-style baseline "
          f"{figures['baseline_rows_per_s']:,.0f} rows/s, ratio {figures['speedup']:.2f}x; "
          f"model-only floor {figures['model_floor_rows_per_s']:,.0f} rows/s (the most any "
          f"trainer of this model and optimiser reaches: {figures['attainable_speedup']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
