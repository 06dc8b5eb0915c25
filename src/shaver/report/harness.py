"""``shaver bench``: the benchmark grid models x methods x budgets x seeds, resumable.

Output folder::

    bench.json        the settings of the grid (a rerun with other settings is refused)
    runs/<model>-s<seed>/                base models (shaver-run directories), reused
    attributions/<model>-s<seed>-<placeholder>.safetensors (+ .json report record)
    cells.jsonl       one finished cell per line (appended + fsynced: the resume point)
    results.csv, results.json, report.json, report.html
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shaver.attribution.cost import attribution_cost, describe_cost, history_epoch_seconds
from shaver.report import compress, stages
from shaver.report.aggregate import summarize
from shaver.report.cells import CellStore
from shaver.report.environment import collect_environment
from shaver.report.html import write_report
from shaver.report.schema import (
    ReportError,
    ResultRow,
    atomic_write_text,
    document_to_json,
    make_document,
    rows_to_csv,
)

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """The grid and the settings shared by its cells."""

    data: str | None = None
    dataset: str | None = "movielens-100k"
    rows: int = 200_000
    models: Sequence[str] = ("deepfm",)
    methods: Sequence[str] = ("auto", "shaver", "shaver-zero", "magnitude", "random", "taylor",
                              "ptq", "shaver-bytes")
    sparsities: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
    seeds: Sequence[int] = (0,)
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 1e-3
    tolerance: float | None = 0.01
    max_samples: int | None = None
    max_seconds: float | None = None
    device: str | None = None
    ptq_bits: Sequence[int] = (8, 4, 2)
    table_fractions: Sequence[int] = compress.TABLE_FRACTIONS  # shaver-bytes: 1/N of fp32
    title: str | None = None
    html: bool = True  # also render report.html (report.json is always written)
    extra_commands: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for method in self.methods:
            compress.method_spec(method)  # raises on an unknown method
        if not self.models or not self.methods or not self.seeds:
            raise ReportError("bench needs at least one model, one method and one seed")
        bad = [s for s in self.sparsities if not 0 < float(s) <= 1]
        if bad:
            raise ReportError(f"sparsities must lie in (0, 1], got {bad}")

    def identity(self) -> dict[str, Any]:
        """Settings that change a cell's result: a rerun must keep them."""
        keep = ("data", "dataset", "rows", "epochs", "batch_size", "lr", "tolerance",
                "max_samples", "max_seconds")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class BenchOutcome:
    rows: list[ResultRow]
    results_csv: Path
    report_html: Path | None
    computed: int

    def table(self) -> str:
        return format_table(self.rows)


def format_table(rows: Sequence[ResultRow]) -> str:
    """A short text table of the summaries (mean over seeds)."""
    lines = [f"{'model':<9} {'method':<12} {'budget':<15} {'kept':>9} {'artifact':>11} "
             f"{'AUC':>7} {'LogLoss':>8}"]
    for s in summarize(rows):
        size = "-" if s.artifact_bytes is None else f"{s.artifact_bytes / 1024:.1f} KiB"
        lines.append(f"{s.model:<9} {s.method:<12} {s.budget:<15} {s.kept:>9} {size:>11} "
                     f"{s.auc:>7.4f} {s.logloss:>8.4f}")
    return "\n".join(lines)


def _check_settings(out: Path, config: BenchConfig) -> None:
    path = out / "bench.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != config.identity():
            changed = sorted(k for k in config.identity() if stored.get(k) != config.identity()[k])
            raise ReportError(f"{out} holds a benchmark run with other settings "
                              f"({', '.join(changed)}); use another --out or the same settings")
    else:
        atomic_write_text(path, json.dumps(config.identity(), indent=1))


def run_bench(config: BenchConfig, out: str | os.PathLike[str], *, quiet: bool = False
              ) -> BenchOutcome:
    """Run (or finish) the grid under ``out`` and write the results and the report."""
    config.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: is a file; --out names the benchmark's folder")
    if out.is_dir():
        _check_settings(out, config)
    # the data first: a refused --data or --dataset leaves no output folder behind
    name, dataset = stages.open_bench_data(data=config.data, dataset=config.dataset,
                                           rows=config.rows, workdir=out / "data",
                                           quiet=quiet)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    store = CellStore(out / "cells.jsonl")
    before = len(store)
    records, timings = [], []
    for model_name in config.models:
        for seed in config.seeds:
            rec, tim = _run_model_seed(config, out, name, dataset, model_name, seed, store, quiet)
            records += rec
            timings += tim
    rows = [r for r in store.rows.values() if r.dataset == name]
    return _write_outputs(config, out, name, rows, records, timings, len(store) - before,
                          fields={name: dataset.field_names})


def _run_model_seed(config: BenchConfig, out: Path, name: str, dataset: Any, model_name: str,
                    seed: int, store: CellStore, quiet: bool) -> tuple[list, list]:
    """Every method of one (model, seed): the base model is trained once, each attribution
    once; only the cells not in ``store`` are computed."""
    base = stages.train_or_reuse(
        dataset, model_name, seed, out / "runs" / f"{model_name}-s{seed}", epochs=config.epochs,
        lr=config.lr, batch_size=config.batch_size, device=config.device, quiet=quiet)
    ctx = compress.CellContext(dataset=dataset, dataset_name=name, model_name=model_name,
                               seed=seed, base=base.model, device=config.device, quiet=quiet)
    records: list[dict[str, Any]] = []
    timings = [{"dataset": name, "model": model_name, "step": "training epoch",
                "seconds": statistics.median(base.epoch_seconds) if base.epoch_seconds else 0.0,
                "note": f"median of {len(base.epoch_seconds)} epochs, seed {seed}"}]
    if ("base", "full") not in {k[2:4] for k in store.rows if k[:2] == (name, model_name)
                                and k[4] == seed}:
        store.add(compress.base_row(ctx, base.test))
    options = {"tolerance": config.tolerance, "max_samples": config.max_samples,
               "max_seconds": config.max_seconds, "device": config.device}
    for method in config.methods:
        todo = compress.pending_budgets(method, config.sparsities, config.ptq_bits,
                                        lambda b, m=method: (name, model_name, m, b, seed)
                                        not in store, config.table_fractions)
        spec = compress.method_spec(method)
        attribution = None
        if spec.placeholder_of_attribution is not None:
            path = (out / "attributions" /
                    f"{model_name}-s{seed}-{spec.placeholder_of_attribution}.safetensors")
            if not todo and path.with_suffix(".json").is_file():
                attribution, record = None, json.loads(path.with_suffix(".json").read_text())
            else:
                attribution, record = stages.attribute_or_reuse(
                    base.model, dataset, placeholder=spec.placeholder_of_attribution,
                    seed=seed, path=path, options=options, quiet=quiet)
            record = _with_cost(record, base.epoch_seconds)
            records.append({"dataset": name, "model": model_name, **record})
            timings.append({"dataset": name, "model": model_name, "step": "attribute once",
                            "seconds": record["seconds"],
                            "note": f"{record['placeholder']}, {record['samples']} samples, "
                                    f"seed {seed}; {describe_cost(record['cost'])}"})
        if todo:
            rows, score_seconds = compress.run_method(ctx, method, todo, attribution)
            store.add_all(rows)
            if spec.scorer in ("magnitude", "random", "taylor"):
                timings.append({"dataset": name, "model": model_name,
                                "step": f"score once ({method})", "seconds": score_seconds,
                                "note": f"seed {seed}"})
        cut = [r.seconds for k, r in store.rows.items()
               if k[:3] == (name, model_name, method) and k[4] == seed]
        if cut and method != "ptq" and not spec.search:
            timings.append({"dataset": name, "model": model_name,
                            "step": f"prune per new budget ({method})",
                            "seconds": statistics.median(cut),
                            "note": f"median of {len(cut)} budgets: cut + masked model, "
                                    "no evaluation"})
    return records, timings


def _with_cost(record: dict[str, Any], epoch_seconds: list[float]) -> dict[str, Any]:
    """The attribution's record with its cost in training epochs of the same run (its
    epochs' mean seconds), seconds and passes (:mod:`shaver.attribution.cost`)."""
    epoch = history_epoch_seconds([{"seconds": s} for s in epoch_seconds])
    return {**record, "cost": attribution_cost(record["seconds"], record.get("passes"), epoch)}


def _write_outputs(config: BenchConfig, out: Path, name: str, rows: list[ResultRow],
                   records: list, timings: list, computed: int,
                   fields: dict[str, list[str]]) -> BenchOutcome:
    csv_path = atomic_write_text(out / "results.csv", rows_to_csv(rows))
    summaries = [asdict(s) for s in summarize(rows)]
    atomic_write_text(out / "results.json", json.dumps(
        {"rows": [r.to_dict() for r in rows], "summary": summaries}, indent=1) + "\n")
    env = collect_environment(seeds=",".join(map(str, config.seeds)), dataset=name,
                              bench_settings=json.dumps(config.identity(), sort_keys=True))
    launched_by_cli = Path(sys.argv[0]).name == "shaver" or sys.argv[0].endswith(
        os.path.join("shaver", "__main__.py"))
    commands = [" ".join(["shaver", *map(shlex.quote, sys.argv[1:])])] if launched_by_cli else []
    doc = make_document(rows, title=config.title or f"shaver bench: {name}",
                        attributions=records, timings=timings, environment=env,
                        commands=commands + list(config.extra_commands), fields=fields)
    atomic_write_text(out / "report.json", document_to_json(doc))
    html = write_report(doc, out / "report.html") if config.html else None
    log.info("%d cells computed, %d in total", computed, len(rows))
    return BenchOutcome(rows=rows, results_csv=csv_path, report_html=html, computed=computed)
