"""The datasets of the quality grid: built-in MovieLens-100k, or synthetic Criteo data built
exactly as ``shaver bench --dataset synthetic-criteo --rows N`` builds it (same generator,
seed and preset, prepared once under the work directory and reused)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shaver.data.store import PreparedDataset
from shaver.data.synthetic import synth_criteo
from shaver.errors import DataError
from shaver.report.stages import open_bench_data

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
