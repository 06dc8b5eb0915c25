"""Prune a trained run directory to many budgets and write pruned dirs + a results table.

This is what ``shaver prune`` does; the CLI only parses arguments and prints.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shaver.attribution.result import Attribution
from shaver.errors import CheckpointError, ShaverError
from shaver.fileio import check_output_dir, remove_stale_temps, write_text_atomic
from shaver.pruning.api import prune
from shaver.pruning.finetune import FinetuneConfig
from shaver.pruning.io import INFO_FILE, read_info, save_pruned
from shaver.pruning.scorers import check_scorer, compute_scores
from shaver.table.budget import Budget
from shaver.table.families import Shape
from shaver.train.checkpoint import load_run, open_run_dataset

COLUMNS = ("budget", "kept", "total", "sparsity", "artifact_bytes", "table_bytes", "plan",
           "head_dtype", "auc", "logloss", "seconds", "method", "winner", "scorer",
           "placeholder", "order", "codebook", "calibrated", "finetuned", "finetune_epochs",
           "finetune_best_epoch", "path")
#: auto: the chooser's cut on validation per budget; shaver: the paper's; single: --scorer's.
RUN_METHODS: tuple[str, ...] = ("auto", "shaver", "single")


def default_attribution(run_dir: Path, placeholder: str = "codebook") -> Path:
    return run_dir / f"attribution-{placeholder}.safetensors"


def variant_name(method: str, scorer: str, placeholder: str, order: str, codebook: str,
                 finetuned: bool) -> str:
    """Directory prefix of a pruning variant: ``auto``, or
    ``shapley-codebook-abs-fixed`` for a fixed ranking; ``-ft`` when fine-tuned."""
    name = "auto" if method == "auto" else f"{scorer}-{placeholder}-{order}-{codebook}"
    return name + ("-ft" if finetuned else "")


def cut_dir_name(prefix: str, budget: Budget) -> str:
    """``auto-sparsity-0.95``, ``auto-table_bytes-1of16``: a budget label as a folder name."""
    return f"{prefix}-{budget.label.replace('=', '-').replace('/', 'of')}"


def prune_run(
    run_dir: str | os.PathLike[str],
    budgets: Sequence[Budget],
    *,
    attribution: str | os.PathLike[str] | None = None,
    scorer: str = "shapley",
    placeholder: str | None = None,
    order: str = "abs",
    codebook: str = "fixed",
    method: str = "auto",
    values: Sequence[str] | None = None,
    heads: Sequence[str] | None = None,
    families: Sequence[Shape] | None = None,
    finetune_config: FinetuneConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str | None = None,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Prune the model of ``run_dir`` to every budget (any kind) through
    :func:`shaver.pruning.api.prune`; returns the results rows.

    ``method="auto"`` (the default) chooses each budget's cut on the validation split
    (:mod:`shaver.pruning.chooser`), restricted by ``values`` / ``heads`` / ``families``;
    "shaver" is the paper's cut; "single" cuts by ``scorer``'s ranking with ``placeholder``
    / ``order`` / ``codebook``. Writes one pruned directory per budget,
    ``<out>/<variant>-<kind>-<value>``, and ``<out>/results.csv`` + ``results.json``
    (default out: ``<run_dir>/pruned``). The attribution (default
    ``<run_dir>/attribution-codebook.safetensors``) must come from this run's model and data.
    """
    if method not in RUN_METHODS:
        raise CheckpointError(f"unknown method {method!r}: expected one of "
                              f"{', '.join(RUN_METHODS)}")
    check_scorer(scorer)
    run = load_run(run_dir, device=device)
    out_dir = check_output_dir(out if out is not None else run.path / "pruned", CheckpointError)
    dataset = open_run_dataset(run, data_dir)
    attr = None
    if method != "single" or attribution is not None or scorer == "shapley":
        path = Path(attribution) if attribution is not None else \
            default_attribution(run.path, placeholder or "codebook")
        if not path.is_file():
            raise CheckpointError(f"{path}: attribution file not found (run `shaver attribute "
                                  f"--run {run.path}` or pass --attribution)")
        attr = Attribution.load(path)
    if method == "single":
        # taylor accumulates over the attribution's splits (a ":fraction" sample -> whole splits)
        data = str((attr.settings if attr else {}).get("data", "train")).split(":")[0]
        source: Any = compute_scores(scorer, run.model, attribution=attr, dataset=dataset,
                                     placeholder=placeholder, data=data, seed=seed,
                                     device=device, quiet=quiet)
        api_method, ranking = "scores", {"order": order, "codebook": codebook}
    else:
        source, api_method = attr, method
        ranking = {"order": order, "codebook": codebook} if method == "shaver" else {}
    results = prune(run.model, source, budgets, method=api_method, dataset=dataset,
                    values=values, heads=heads, families=families,
                    finetune_config=finetune_config, device=device, quiet=quiet, **ranking)
    remove_stale_temps(out_dir)  # what a killed run left
    prefix = variant_name(method, scorer, results[0].info["placeholder"] if results else "",
                          order, codebook, finetune_config is not None)
    rows = []
    for result in results:
        row = {**result.row(), "method": method}
        path = save_pruned(out_dir / cut_dir_name(prefix, result.budget), result.model,
                           {**result.info, "row": row})
        rows.append({**row, "path": str(path)})
    write_results(out_dir)
    return rows


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def collect_rows(out_dir: Path) -> list[dict[str, Any]]:
    """The results row of every pruned directory under ``out_dir`` (each pruned.json is the
    source of truth of its own cut), by directory name; hidden directories (a write in
    progress, or one an interrupted run left) are not cuts."""
    rows = []
    for info_path in sorted(Path(out_dir).glob(f"*/{INFO_FILE}")):
        if info_path.parent.name.startswith("."):
            continue
        try:
            row = read_info(info_path.parent).get("row")
        except ShaverError:
            continue  # not a pruned directory (or one of an older format): not listed
        if isinstance(row, dict):
            rows.append({**row, "path": str(info_path.parent)})
    return rows


def write_results(out_dir: Path) -> list[dict[str, Any]]:
    """``results.csv`` and ``results.json`` in ``out_dir``, rebuilt from every pruned
    directory in it (so earlier and concurrent prunes keep their rows), each written
    atomically; returns the rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = collect_rows(out_dir)
    for name, text in (("results.csv", results_csv(rows)),
                       ("results.json", json.dumps(rows, indent=2) + "\n")):
        write_text_atomic(out_dir / name, text)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: budget, kept, sparsity, artifact and table bytes, AUC, LogLoss,
    seconds, the plan and the winning candidate of ``auto``."""
    winners = any(r.get("winner") for r in rows)
    head = f"{'budget':<22} {'kept':>10} {'sparsity':>9} {'bytes':>12} {'table':>10} " \
           f"{'AUC':>8} {'LogLoss':>8} {'seconds':>8}  {'plan':<22} {'head':<5}" \
           + ("  winner (on validation)" if winners else "")
    lines = [head, "-" * len(head)]
    for r in rows:
        auc = "n/a" if r.get("auc") is None else f"{r['auc']:.4f}"
        ll = "n/a" if r.get("logloss") is None else f"{r['logloss']:.4f}"
        secs = "" if r.get("seconds") is None else f"{r['seconds']:.3f}"
        table = "" if r.get("table_bytes") is None else str(r["table_bytes"])
        lines.append(f"{r['budget']:<22} {r['kept']:>10} {r['sparsity']:>9.4f} "
                     f"{r['artifact_bytes']:>12} {table:>10} {auc:>8} {ll:>8} {secs:>8}  "
                     f"{r.get('plan') or '':<22} {r.get('head_dtype') or '':<5}"
                     + (f"  {r.get('winner') or ''}" if winners else ""))
    return "\n".join(lines)
