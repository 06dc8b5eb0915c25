"""Training throughput of DeepFM: shaver's trainer vs a loop in the style of the paper's code.

Both train the same DeepFM (d=16, MLP 400-400-400, batch norm, dropout 0.2) with Adam on the
same Criteo-shaped prepared dataset (39 fields, ~1M embedding rows, Zipf-like ids), on the
same device:

* ours: ``shaver.train.loop.fit`` (split held in memory as one tensor, on the GPU when
  there is one; batches are index gathers; fused Adam; loss synced every 25 steps on GPU;
  the model's ``FastDropout``), once with dense Adam (``--optimizer adam``, the default,
  the same update rule as the baseline) and once with lazy Adam (``--optimizer lazy-adam``:
  only the embedding rows a batch looks up are updated, a different optimisation);
* baseline, as in the authors' research code: a torch ``Dataset`` whose ``__getitem__``
  returns one row (decoded from a uint32 record, offsets added per sample, label as a
  tensor) + ``DataLoader(shuffle=True)`` with default collation, ``.to(device)`` per batch,
  ``BCEWithLogitsLoss``, ``torch.optim.Adam`` defaults, ``loss.item()`` every step, and the
  model built from torch's own layers as theirs is (``nn.Dropout``, the same architecture and
  weights). (Their records come from LMDB; ours from an in-memory array, which flatters the
  baseline.)

Throughput = training rows / seconds of the training loop (evaluation excluded), median of
``--repeats`` runs each. Also printed: the model-only floor of each optimiser (forward +
backward + optimiser step on one resident batch, nothing else), which bounds what any
trainer reaches with this model and optimiser. Usage::

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
from shaver.models.layers import FastDropout
from shaver.models.registry import build_model
from shaver.train.device import pick_device
from shaver.train.loop import fit
from shaver.train.optim import make_optimizer, sparse_embeddings

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


def paper_style_model(data: PreparedDataset, seed: int) -> torch.nn.Module:
    """Our DeepFM with torch's ``nn.Dropout`` in place of ``FastDropout``, as the authors'
    code builds it (same architecture, same initial weights)."""
    model = build_model("deepfm", data, seed=seed)
    for name, module in list(model.mlp.named_children()):
        if isinstance(module, FastDropout):
            setattr(model.mlp, name, torch.nn.Dropout(module.p))
    return model


def run_baseline(data: PreparedDataset, device: torch.device, batch: int, workers: int,
                 seed: int) -> float:
    """Rows per second of one epoch of the paper-style loop."""
    model = paper_style_model(data, seed).to(device)
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


def run_ours(data: PreparedDataset, device: torch.device, batch: int, seed: int,
             optimizer: str = "adam") -> float:
    """Rows per second of one epoch of ``shaver.train.loop.fit`` (its own measurement)."""
    model = build_model("deepfm", data, seed=seed)
    result = fit(model, data, epochs=1, batch_size=batch, lr=1e-3, weight_decay=1e-6,
                 patience=None, seed=seed, device=device, quiet=True, optimizer=optimizer)
    return float(result.history[0]["samples_per_s"])


def run_model_floor(data: PreparedDataset, device: torch.device, batch: int, steps: int,
                    seed: int, optimizer: str = "adam") -> float:
    """Rows per second of the model's own work alone: forward, backward and the optimiser
    step on ONE batch already resident on the device (no data, no shuffling, no loss sync).
    No trainer can beat it with this model and optimiser: it bounds the attainable ratio."""
    model = build_model("deepfm", data, seed=seed).to(device).train()
    opt = make_optimizer(model, 1e-3, 1e-6, device, optimizer)
    x, y = (torch.from_numpy(np.asarray(a[:batch])) for a in data.arrays("train"))
    x, y = x.long().to(device), y.float().to(device)
    with sparse_embeddings(model, optimizer == "lazy-adam"):
        start = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - start)


LOOPS = {"baseline": "paper-style baseline (per-sample Dataset + DataLoader, Adam)",
         "ours adam": "ours, dense Adam (the baseline's update rule)",
         "ours lazy-adam": "ours, lazy Adam (only looked-up rows updated)",
         "floor adam": "model-only floor, dense fused Adam (bound for any trainer)",
         "floor lazy-adam": "model-only floor, lazy Adam"}


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
        runs: dict[str, list[float]] = {key: [] for key in LOOPS}
        for r in range(args.repeats):
            runs["baseline"].append(
                run_baseline(data, device, args.batch_size, args.workers, seed=r))
            for kind in ("adam", "lazy-adam"):
                runs[f"ours {kind}"].append(run_ours(data, device, args.batch_size, r, kind))
                runs[f"floor {kind}"].append(
                    run_model_floor(data, device, args.batch_size, args.steps, r, kind))
            print(f"  repeat {r + 1}: " + ", ".join(
                f"{key} {values[-1]:,.0f}" for key, values in runs.items()) + " rows/s",
                flush=True)
    base = statistics.median(runs["baseline"])
    figures = {"device": str(device), "threads": torch.get_num_threads(),
               "rows": rows, "batch_size": args.batch_size, "vocab": data.num_features,
               "repeats": args.repeats, "rows_per_s": {}, "vs_baseline": {}}
    print(f"DeepFM training throughput, rows/s (median of {args.repeats}; ratio to the "
          "paper-style baseline measured in the same run):")
    for key, label in LOOPS.items():
        speed = statistics.median(runs[key])
        figures["rows_per_s"][key], figures["vs_baseline"][key] = speed, speed / base
        print(f"  {label:<70} {speed:>9,.0f}  {speed / base:5.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
