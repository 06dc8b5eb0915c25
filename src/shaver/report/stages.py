"""The pipeline stages as the benchmark and the demo use them: thin calls into the stages'
public Python APIs (data, train, attribution), each reusing its output when it is already on
disk so that a benchmark can be resumed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shaver.attribution.api import attribute
from shaver.attribution.result import Attribution
from shaver.attribution.sampling import DEFAULT_DATA
from shaver.attribution.stopping import (
    DEFAULT_STOP_BUDGETS,
    DEFAULT_STOP_DRAWS,
    DEFAULT_STOP_FRACTION,
    active_budgets,
    cut_regret,
)
from shaver.data.builtin import BUILTINS, load_builtin
from shaver.data.prepare import prepare_dataset
from shaver.data.store import PreparedDataset, open_dataset
from shaver.data.synthetic import synth_criteo
from shaver.models.registry import build_model
from shaver.report.schema import ReportError, atomic_write_text
from shaver.train.checkpoint import check_dataset, load_run
from shaver.train.loop import evaluate, fit
from shaver.train.state import state_path

log = logging.getLogger(__name__)

BUILTIN_DATASETS = (*BUILTINS, "synthetic-criteo")


def open_bench_data(*, data: str | os.PathLike[str] | None, dataset: str | None, rows: int,
                    workdir: Path, seed: int = 0, quiet: bool = False
                    ) -> tuple[str, PreparedDataset]:
    """(name, dataset): a prepared directory, the built-in MovieLens-100k, or synthetic Criteo
    data generated and prepared once under ``workdir`` (reused when present)."""
    if data is not None:
        return Path(data).name, open_dataset(data)
    if dataset in BUILTINS:
        return dataset, load_builtin(dataset, quiet=quiet)
    if dataset == "synthetic-criteo":
        return dataset, _synthetic_criteo(rows, workdir, seed, quiet)
    raise ReportError(f"unknown dataset {dataset!r}: expected one of {', '.join(BUILTIN_DATASETS)}"
                      " or a prepared directory (--data DIR)")


def _synthetic_criteo(rows: int, workdir: Path, seed: int, quiet: bool) -> PreparedDataset:

    if rows < 1000:
        raise ReportError(f"synthetic-criteo needs at least 1000 rows, got {rows}")
    prepared = workdir / f"synthetic-criteo-{rows}-s{seed}"
    if (prepared / "meta.json").is_file():
        return open_dataset(prepared)
    workdir.mkdir(parents=True, exist_ok=True)
    raw = workdir / f"synthetic-criteo-{rows}-s{seed}.txt"
    synth_criteo(raw, rows, seed=seed, quiet=quiet)
    try:
        return prepare_dataset("criteo", raw, prepared, seed=seed, quiet=quiet)
    finally:
        raw.unlink(missing_ok=True)
        Path(f"{raw}.json").unlink(missing_ok=True)


@dataclass
class TrainedBase:
    """A trained base model and what it cost: ``epoch_seconds`` per training epoch."""

    model: torch.nn.Module
    run_dir: Path
    test: dict[str, Any]
    epoch_seconds: list[float]
    reused: bool


def train_or_reuse(dataset: PreparedDataset, model_name: str, seed: int, run_dir: Path, *,
                   epochs: int, lr: float, batch_size: int, device: str | None,
                   quiet: bool) -> TrainedBase:
    """Train ``model_name`` into ``run_dir`` (via ``<run_dir>.partial``, resumed if a previous
    run was interrupted), or load it when ``run_dir`` is complete."""
    if (run_dir / "config.json").is_file():
        run = load_run(run_dir, device=device)
        check_dataset(dataset, run.dataset_fingerprint, f"run {run_dir}")
        metrics = run.config.get("metrics", {})
        test = metrics.get("test") or evaluate(run.model, dataset, "test", device=device)
        seconds = [float(h["seconds"]) for h in metrics.get("history", [])]
        return TrainedBase(run.model, run_dir, test, seconds, reused=True)
    partial = run_dir.with_name(run_dir.name + ".partial")
    resume = state_path(partial).is_file()  # an interrupted training: continue it
    if partial.exists() and not resume:
        shutil.rmtree(partial)
    model = build_model(model_name, dataset, seed=seed)  # same as `shaver train`
    result = fit(model, dataset, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                 device=device, out_dir=partial, resume=resume, quiet=quiet)
    os.replace(partial, run_dir)
    test = result.test or evaluate(result.model, dataset, "test", device=device)
    seconds = [float(h["seconds"]) for h in result.history]
    return TrainedBase(result.model, run_dir, test, seconds, reused=False)


def field_dim_mean_abs(phi: torch.Tensor, field_dims: list[int]) -> list[list[float]]:
    """(fields, d) mean |phi| over each field's rows, as nested lists."""
    values = phi.detach().abs().double().cpu().numpy()
    bounds = np.cumsum([0, *field_dims])
    return [values[bounds[f]:bounds[f + 1]].mean(axis=0).round(10).tolist()
            for f in range(len(field_dims))]


#: Samples of the first attribution chunk (at most 1/8 of a pass); each next chunk is 1.6x
#: larger: the points of the convergence trace.
FIRST_CHUNK = 4096
CHUNK_GROWTH = 1.6


def attribute_or_reuse(model: torch.nn.Module, dataset: PreparedDataset, *, placeholder: str,
                       seed: int, path: Path, options: dict[str, Any], quiet: bool
                       ) -> tuple[Any, dict[str, Any]]:
    """(Attribution, record for the report): computed once, stored at ``path`` (safetensors)
    with its report record beside it (``.json``); a killed run resumes from ``.ckpt``.

    ``options``: tolerance, max_samples, max_seconds, device (and any other keyword of
    ``shaver.attribution.api.attribute``)."""
    record_path = path.with_suffix(".json")
    if path.is_file() and record_path.is_file():
        return Attribution.load(path), json.loads(record_path.read_text())
    checkpoint = path.with_suffix(".ckpt")
    result, trace, seconds = attribute_with_trace(model, dataset, placeholder=placeholder,
                                                  seed=seed, checkpoint=checkpoint,
                                                  options=options, quiet=quiet)
    path.parent.mkdir(parents=True, exist_ok=True)
    result.save(path)
    record = {
        "placeholder": placeholder, "seed": seed, "samples": int(result.count),
        "seconds": seconds, "passes": result.settings.get("passes"),
        "tolerance": options.get("tolerance"),
        "stop_reason": result.settings.get("stop_reason"),
        "stop": result.settings.get("stop"),
        "stop_fraction": (result.settings.get("stop_cut") or {}).get("fraction"),
        "field_names": list(dataset.field_names),
        "mean_abs_phi": field_dim_mean_abs(result.phi, list(result.field_dims)),
        "trace": trace,
    }
    atomic_write_text(record_path, json.dumps(record))
    checkpoint.unlink(missing_ok=True)
    return result, record


#: Above this many entries the trace takes the cut rule's own last check (if any) instead of
#: sorting the table ``draws + 1`` times per chunk.
TRACE_REGRET_ENTRIES = 5_000_000


def _worst_regret(result: Any, options: dict[str, Any]) -> float:
    """The cut rule's worst regret over its budgets for ``result``'s phi and errors (nan
    when the table is too large to check per chunk and the rule has not checked yet)."""
    own = ((result.settings.get("stop_cut") or {}).get("regret") or {}).values()
    if result.phi.numel() > TRACE_REGRET_ENTRIES:
        return max(own, default=float("nan"))

    kept = active_budgets(result.phi.numel(), options.get("stop_budgets", DEFAULT_STOP_BUDGETS))
    if not kept or result.count == 0:
        return float("nan")
    check = cut_regret(result.phi.reshape(-1), result.stderr.reshape(-1), kept,
                       fraction=options.get("stop_fraction", DEFAULT_STOP_FRACTION),
                       draws=options.get("stop_draws", DEFAULT_STOP_DRAWS))
    return check.worst()[1]


def attribute_with_trace(model: torch.nn.Module, dataset: PreparedDataset, *, placeholder: str,
                         seed: int, checkpoint: Path, options: dict[str, Any], quiet: bool
                         ) -> tuple[Any, list[dict[str, float]], float]:
    """Run ``attribute`` in growing chunks, each resuming the previous one's saved state (the
    same samples and permutations as one uninterrupted run), recording after each chunk
    SAGE's ratio and the cut rule's worst regret over its budgets (computed from the state
    even before the rule may fire): (Attribution, trace [{samples, seconds, ratio, regret}],
    seconds)."""
    opts = dict(options)
    tolerance = opts.pop("tolerance", 0.01)
    max_samples = opts.pop("max_samples", None)
    max_seconds = opts.pop("max_seconds", None)
    if tolerance is None and max_samples is None and max_seconds is None:
        raise ReportError("attribution needs a stopping rule: a tolerance, max_samples or "
                          "max_seconds")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    trace: list[dict[str, float]] = []
    rows = dataset.num_rows(opts.get("data", DEFAULT_DATA))
    spent, target = 0.0, max(256, min(FIRST_CHUNK, rows // 8))  # a few points per pass
    stage_log = logging.getLogger("shaver.attribution")
    level = stage_log.level
    if not log.isEnabledFor(logging.DEBUG):
        stage_log.setLevel(logging.WARNING)  # its per-chunk resume lines would be noise here
    try:
        while True:
            cap = target if max_samples is None else min(target, int(max_samples))
            left = None if max_seconds is None else max(float(max_seconds) - spent, 1e-3)
            started = time.perf_counter()
            result = attribute(model, dataset, placeholder=placeholder, seed=seed,
                               tolerance=tolerance, max_samples=cap, max_seconds=left,
                               checkpoint_path=checkpoint, resume=True, quiet=quiet, **opts)
            spent += time.perf_counter() - started
            ratio = float(result.settings.get("convergence_ratio", float("nan")))
            trace.append({"samples": int(result.count), "seconds": round(spent, 4),
                          "ratio": ratio, "regret": _worst_regret(result, opts)})
            reason = result.settings.get("stop_reason")
            if reason in ("converged", "stable", "max_seconds") or cap == max_samples:
                log.info("attribution (%s): %d samples in %.1f s, ratio %.4g, stopped: %s",
                         placeholder, result.count, spent, ratio, reason)
                return result, trace, spent
            target = int(target * CHUNK_GROWTH)
    finally:
        stage_log.setLevel(level)
