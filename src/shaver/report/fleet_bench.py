"""``shaver bench --fleet FLEET.yaml``: seconds from a new budget list to all artifacts written.

The model and attribution are a trained run (``--run``, its attribution file) or, to time a
Criteo-shaped table without training, a randomly initialised DeepFM (MLP 400-400-400, d =
16) on generated Criteo data of ``rows`` rows (prepared once under ``workdir``) with random
scores (timings only: the artifacts' quality means nothing then). Every class goes through
the chooser, validation passes included, as ``shaver fleet`` does. Timed, as medians of
``repeats`` runs into fresh directories: ``fleet``, all classes from one opened chooser (what
``shaver fleet`` does); and the baseline measured in the same run, ``per class``, each class
alone (a fleet of one class each: open + choose + write per class, what a tool serving one
budget at a time pays). A method that retrains per budget pays one training run per class.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from shaver.attribution.result import Attribution
from shaver.data.store import PreparedDataset
from shaver.deploy.fleet import run_fleet
from shaver.deploy.fleet_spec import load_fleet
from shaver.models.registry import build_model
from shaver.report.stages import open_bench_data
from shaver.train.checkpoint import load_run, model_fingerprint, open_run_dataset


def random_source(dataset: PreparedDataset, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """(random DeepFM of ``dataset``'s fields x 16, random Attribution of its table)."""
    dims = list(dataset.field_dims)
    model = build_model("deepfm", dims, seed=seed).eval()
    rows = sum(dims)
    gen = torch.Generator().manual_seed(seed)
    phi = torch.randn(rows, 16, generator=gen)
    attr = Attribution(phi=phi, stderr=torch.zeros(rows, 16), count=1,
                       codebook=torch.zeros(len(dims), 16), placeholder="zero",
                       model_fingerprint=model_fingerprint(model),
                       dataset_fingerprint=dataset.fingerprint, field_dims=dims)
    return model, attr


def bench_fleet(fleet_file: str | Path, *, run: str | Path | None = None,
                attribution: str | Path | None = None, rows: int = 200_000,
                workdir: str | Path = "bench-data", repeats: int = 3, seed: int = 0,
                quiet: bool = False) -> dict[str, Any]:
    """Time the fleet of ``fleet_file`` (see the module docstring); returns the figures."""
    classes = load_fleet(fleet_file)
    if run is not None:
        loaded = load_run(run, device="cpu")
        model, dataset = loaded.model, open_run_dataset(loaded)
        attr = Attribution.load(attribution or Path(run) / "attribution-codebook.safetensors")
        source = f"run {run}"
    else:
        _, dataset = open_bench_data(data=None, dataset="synthetic-criteo", rows=rows,
                                     workdir=Path(workdir), seed=seed, quiet=quiet)
        model, attr = random_source(dataset, seed)
        source = (f"random DeepFM {sum(dataset.field_dims):,} x 16 on synthetic Criteo "
                  f"({rows:,} rows)")
    fleet_times, single_times, last = [], [], None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            last = run_fleet(model, attr, classes, Path(tmp) / "all", dataset=dataset,
                             evaluate=False)
            fleet_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            for cls in classes:
                run_fleet(model, attr, [cls], Path(tmp) / cls.name, dataset=dataset,
                          evaluate=False)
            single_times.append(time.perf_counter() - started)
    assert last is not None
    figures = {"source": source, "classes": len(classes), "repeats": repeats,
               "fleet_seconds": statistics.median(fleet_times),
               "per_class_seconds": statistics.median(single_times),
               "fleet_runs": fleet_times, "per_class_runs": single_times,
               "manifest": last.classes}
    if not quiet:
        print(format_figures(figures))
    return figures


def format_figures(figures: dict[str, Any]) -> str:
    lines = [f"fleet bench: {figures['source']}, {figures['classes']} classes, median of "
             f"{figures['repeats']} runs",
             f"  new budget list -> all artifacts + manifest written: "
             f"{figures['fleet_seconds']:.2f} s",
             f"  baseline, each class alone (sort + cut + write per class): "
             f"{figures['per_class_seconds']:.2f} s"]
    for entry in figures["manifest"]:
        if entry["status"] == "unmet":
            lines.append(f"  {entry['name']:<14} unmet ({entry['reason']})")
        else:
            row = entry["row"]
            lines.append(f"  {entry['name']:<14} {entry['bytes']:>12,} B  sparsity "
                         f"{row['sparsity']:.4f}  {row['plan']} head {row['head_dtype']}")
    return "\n".join(lines)
