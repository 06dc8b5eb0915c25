"""``shaver bench --fleet FLEET.yaml``: seconds from a new budget list to all artifacts written.

The model and attribution are a trained run (``--run``, its attribution file) or, to time a
Criteo-sized table without training, a randomly initialised DeepFM (MLP 400-400-400, d = 16)
with Criteo-shaped field sizes summing to ``rows`` and random scores (timings only: the
artifacts' quality means nothing then, and no metrics are computed). Timed, as medians of
``repeats`` runs into fresh directories: ``fleet``, all classes from one sorted attribution
(what ``shaver fleet`` does); and the baseline measured in the same run, ``per class``, each
class alone (sort + cut + write per class, what a tool serving one budget at a time pays).
A method that retrains per budget pays one training run per class instead.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIELDS = 39


def criteo_field_dims(rows: int, fields: int = FIELDS, seed: int = 0) -> list[int]:
    """Criteo-like skewed field sizes (a few huge fields, many small) summing to ``rows``."""
    rng = np.random.default_rng(seed)
    weights = np.sort(rng.pareto(0.8, fields) + 0.01)
    dims = np.maximum(2, np.floor(weights / weights.sum() * rows)).astype(int)
    dims[-1] += rows - dims.sum()
    return dims.tolist()


def random_source(rows: int, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """(random DeepFM of ``rows`` x 16, random Attribution of its table)."""
    from shaver.attribution.result import Attribution
    from shaver.models.registry import build_model
    from shaver.train.checkpoint import model_fingerprint

    dims = criteo_field_dims(rows, seed=seed)
    model = build_model("deepfm", dims, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    phi = torch.randn(rows, 16, generator=gen)
    attr = Attribution(phi=phi, stderr=torch.zeros(rows, 16), count=1,
                       codebook=torch.zeros(len(dims), 16), placeholder="zero",
                       model_fingerprint=model_fingerprint(model), field_dims=dims)
    return model, attr


def bench_fleet(fleet_file: str | Path, *, run: str | Path | None = None,
                attribution: str | Path | None = None, rows: int = 1_000_000,
                repeats: int = 3, seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    """Time the fleet of ``fleet_file`` (see the module docstring); returns the figures."""
    from shaver.deploy.fleet import run_fleet
    from shaver.deploy.fleet_spec import load_fleet

    classes = load_fleet(fleet_file)
    if run is not None:
        from shaver.attribution.result import Attribution
        from shaver.train.checkpoint import load_run

        model = load_run(run, device="cpu").model
        attr = Attribution.load(attribution or Path(run) / "attribution-codebook.safetensors")
        source = f"run {run}"
    else:
        model, attr = random_source(rows, seed)
        source = f"random DeepFM {rows:,} x 16 (Criteo-shaped fields)"
    fleet_times, single_times, last = [], [], None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            last = run_fleet(model, attr, classes, Path(tmp) / "all", evaluate=False)
            fleet_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            for cls in classes:
                run_fleet(model, attr, [cls], Path(tmp) / cls.name, evaluate=False)
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
            lines.append(f"  {entry['name']:<14} unmet (smallest {entry['smallest_bytes']:,} B)")
        else:
            lines.append(f"  {entry['name']:<14} {entry['bytes']:>12,} B  sparsity "
                         f"{entry['cut']['sparsity']:.4f}  {entry['class']['values']}/"
                         f"{entry['class']['head']}")
    return "\n".join(lines)
