"""The datasets of the quality grid and the base models its scripts train once. Data:
built-in MovieLens-100k (either genre field), or synthetic Criteo data built exactly as
``shaver bench --dataset synthetic-criteo --rows N`` builds it (same generator, seed and
preset, prepared once under the work directory and reused)."""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shaver.data.store import PreparedDataset
from shaver.data.synthetic import synth_criteo
from shaver.errors import DataError
from shaver.models.registry import build_model
from shaver.report.stages import open_bench_data
from shaver.train.checkpoint import load_run
from shaver.train.loop import fit

#: ``movielens-100k-genre-token``: the built-in as it was before list fields (the genre list as
#: one token), on which the MovieLens tables measured before issue 25 were made.
DATASETS = ("movielens-100k", "movielens-100k-genre-token", "synthetic-criteo")


def open_grid_dataset(name: str, rows: int, work: Path, *, seed: int = 0,
                      cache_dir: Path | None = None) -> tuple[PreparedDataset, dict[str, Any]]:
    """(dataset, info). For synthetic-criteo, info holds the generator's ``hidden_auc`` (the
    hidden model's AUC on the drawn labels: the ceiling for any trained model),
    ``positive_rate`` and ``rows``; ``positive_rate_prepared`` is the positive rate of the
    prepared splits, which equals ``positive_rate`` when both come from the same draw."""
    if name.startswith("movielens-100k"):
        from shaver.data.builtin import load_builtin

        return load_builtin(name, cache_dir, quiet=True), {"dataset": name}
    if name != "synthetic-criteo":
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    _, dataset = open_bench_data(data=None, dataset=name, rows=rows, workdir=work, seed=seed,
                                 quiet=True)
    info_path = work / f"synthetic-criteo-{rows}-s{seed}.info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
    else:
        info = _generator_info(rows, seed)
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    labels = np.concatenate([np.asarray(dataset.labels(s), dtype=np.float64)
                             for s in ("train", "val", "test")])
    return dataset, {**info, "positive_rate_prepared": float(labels.mean())}


def _generator_info(rows: int, seed: int) -> dict[str, Any]:
    """The generator's report for (rows, seed): the bench path deletes its side file, so the
    same draw is made again (deterministic in the seed) in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        info = synth_criteo(Path(tmp) / "synth.txt", rows, seed=seed, quiet=True)
    return {"dataset": "synthetic-criteo", "rows": info["rows"], "seed": info["seed"],
            "scale": info["scale"], "hidden_auc": info["hidden_auc"],
            "positive_rate": info["positive_rate"]}


def trained(name: str, dataset, work: Path, seed: int, epochs: int):
    """The base model of ``work/run-{name}-s{seed}`` (trained once, as the grid scripts do:
    d = 16, lr 1e-3, weight decay 1e-5, batch 2048, patience 2)."""
    run_dir = work / f"run-{name}-s{seed}"
    if not (run_dir / "config.json").exists():
        torch.manual_seed(seed)
        model = build_model(name, dataset, embed_dim=16)
        fit(model, dataset, epochs=epochs, lr=1e-3, weight_decay=1e-5, batch_size=2048,
            patience=2, seed=seed, out_dir=run_dir, quiet=True)
    return load_run(run_dir).model


def epoch_seconds(model, dataset, seed: int) -> float:
    """Wall seconds of one training epoch of a copy of ``model`` (same settings as above)."""
    clone = copy.deepcopy(model)
    began = time.perf_counter()
    fit(clone, dataset, epochs=1, lr=1e-3, weight_decay=1e-5, batch_size=2048, patience=None,
        seed=seed, quiet=True)
    return time.perf_counter() - began
