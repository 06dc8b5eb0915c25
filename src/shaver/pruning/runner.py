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

from shaver.errors import CheckpointError
from shaver.fileio import write_text_atomic
from shaver.pruning.api import prune
from shaver.pruning.budget import Budget
from shaver.pruning.finetune import FinetuneConfig
from shaver.pruning.io import save_pruned
from shaver.pruning.scorers import check_scorer, compute_scores

COLUMNS = ("budget", "kept", "total", "sparsity", "bytes", "auc", "logloss", "seconds",
           "method", "winner", "scorer", "placeholder", "order", "codebook", "finetuned", "path")
#: auto: best cut on validation per budget; shaver: the paper's; single: --scorer's ranking.
RUN_METHODS: tuple[str, ...] = ("auto", "shaver", "single")


def default_attribution(run_dir: Path, placeholder: str = "codebook") -> Path:
    return run_dir / f"attribution-{placeholder}.safetensors"


def variant_name(scorer: str, placeholder: str, order: str, codebook: str,
                 finetuned: bool) -> str:
    """Directory prefix of one pruning variant: ``shapley-codebook-abs-fixed[-ft]``."""
    return f"{scorer}-{placeholder}-{order}-{codebook}" + ("-ft" if finetuned else "")


def prune_run(
    run_dir: str | os.PathLike[str],
    budgets: Sequence[Budget],
    *,
    attribution: str | os.PathLike[str] | None = None,
    scorer: str = "shapley",
    placeholder: str | None = None,
    order: str = "abs",
    codebook: str = "fixed",
    method: str = "single",
    finetune_config: FinetuneConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str | None = None,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Prune the model of ``run_dir`` to every budget; returns the results rows.

    Writes one pruned directory per budget, ``<out>/<variant>-<kind>-<value>``, and
    ``<out>/results.csv`` + ``results.json`` (default out: ``<run_dir>/pruned``). The
    attribution (``shapley``; default ``<run_dir>/attribution-codebook.safetensors``) must
    come from this run's model and dataset. ``method="auto"`` ignores scorer / placeholder /
    order / codebook: each budget's cut is chosen on the validation split
    (:mod:`shaver.pruning.auto`), directories are named ``auto-<budget>`` and rows name the
    ``winner``; "shaver" and "single" prune by ``scorer``'s ranking.
    """
    if method not in RUN_METHODS:
        raise CheckpointError(f"unknown method {method!r}: expected one of "
                              f"{', '.join(RUN_METHODS)}")
    if method == "auto":
        scorer, placeholder, order, codebook = "shapley", None, "abs", "fixed"
    from shaver.attribution.result import Attribution
    from shaver.train.checkpoint import load_run, open_run_dataset

    check_scorer(scorer)
    run = load_run(run_dir, device=device)
    dataset = open_run_dataset(run, data_dir)
    attr = None
    if attribution is not None or scorer == "shapley":
        path = Path(attribution) if attribution is not None else \
            default_attribution(run.path, placeholder or "codebook")
        if not path.is_file():
            raise CheckpointError(f"{path}: attribution file not found (run `shaver attribute "
                                  f"--run {run.path}` or pass --attribution)")
        attr = Attribution.load(path)
    # taylor accumulates over the attribution's splits (a ":fraction" sample -> whole splits)
    data = str((attr.settings if attr else {}).get("data", "train+val")).split(":")[0]
    if method == "auto":
        results = prune(run.model, attr, budgets, method="auto", dataset=dataset,
                        finetune_config=finetune_config, device=device, quiet=quiet)
        prefix = "auto" + ("-ft" if finetune_config is not None else "")
    else:
        scores = compute_scores(scorer, run.model, attribution=attr, dataset=dataset,
                                placeholder=placeholder, data=data, seed=seed, device=device,
                                quiet=quiet)
        results = prune(run.model, scores, budgets, order=order, codebook=codebook,
                        dataset=dataset, finetune_config=finetune_config, device=device,
                        quiet=quiet)
        prefix = variant_name(scorer, scores.placeholder, order, codebook,
                              finetune_config is not None)
    out_dir = Path(out) if out is not None else run.path / "pruned"
    rows = []
    for result in results:
        name = f"{prefix}-{result.budget.label.replace('=', '-')}"
        info = {**result.info, "artifact_bytes": result.artifact_bytes}
        path = save_pruned(out_dir / name, result.model, info)
        rows.append({**result.row(), "method": method,
                     "placeholder": result.info.get("placeholder"), "path": str(path)})
    write_results(out_dir, rows)
    return rows


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_results(out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``results.csv`` and ``results.json`` in ``out_dir``, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.csv", results_csv(rows)),
                       ("results.json", json.dumps(list(rows), indent=2) + "\n")):
        write_text_atomic(out_dir / name, text)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: budget, kept, sparsity, bytes, AUC, LogLoss, seconds (and the
    winning candidate of ``auto``)."""
    winners = any(r.get("winner") for r in rows)
    head = f"{'budget':<22} {'kept':>10} {'sparsity':>9} {'bytes':>12} {'AUC':>8} " \
           f"{'LogLoss':>8} {'seconds':>8}" + ("  winner (on validation)" if winners else "")
    lines = [head, "-" * len(head)]
    for r in rows:
        auc = "n/a" if r.get("auc") is None else f"{r['auc']:.4f}"
        ll = "n/a" if r.get("logloss") is None else f"{r['logloss']:.4f}"
        lines.append(f"{r['budget']:<22} {r['kept']:>10} {r['sparsity']:>9.4f} "
                     f"{r['bytes']:>12} {auc:>8} {ll:>8} {r['seconds']:>8.3f}"
                     + (f"  {r.get('winner') or ''}" if winners else ""))
    return "\n".join(lines)
