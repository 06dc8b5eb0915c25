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

from shaver.errors import BudgetError, CheckpointError
from shaver.fileio import write_text_atomic
from shaver.pruning.api import prune
from shaver.pruning.bytes_runner import PRECISIONS, searched_rows
from shaver.pruning.finetune import FinetuneConfig
from shaver.pruning.io import save_pruned
from shaver.pruning.scorers import check_scorer, compute_scores
from shaver.runtime.tiered import TierSpec
from shaver.table.budget import Budget
from shaver.table.families import Shape

COLUMNS = ("budget", "kept", "total", "sparsity", "bytes", "table_bytes", "plan", "auc",
           "logloss", "seconds", "method", "winner", "scorer", "placeholder", "order", "codebook",
           "finetuned", "path")
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
    table_budgets: Sequence[str] = (),
    precision: str = "auto",
    shapes: Sequence[Shape] | None = None,
) -> list[dict[str, Any]]:
    """Prune the model of ``run_dir`` to every budget; returns the results rows.

    Byte budgets (``bytes`` budgets: the whole artifact; ``table_budgets``: the embedding
    table, e.g. "40KiB" or "1/16" of the fp32 table) are searched over sparsity x bits x tiers
    on validation with ``precision="auto"`` (``shaver.pruning.bytes_search``; ``shapes``
    restricts the plan families); ``precision="fp32"`` prunes with fp32 values as before
    (table budgets then search fp32 pruning only).

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
    searched, budgets = _split_budgets(budgets, table_budgets, precision)
    if searched and finetune_config is not None:
        raise BudgetError("fine-tuning is not available for byte budgets searched over "
                          "precisions: pass --precision fp32, or prune without --finetune")
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
    scores = compute_scores(scorer, run.model, attribution=attr, dataset=dataset,
                            placeholder=placeholder, data=data, seed=seed, device=device,
                            quiet=quiet)
    if precision == "fp32" and shapes is None:
        shapes = [Shape((TierSpec("fp32"),), (1.0,))]
    if method == "auto":
        results = prune(run.model, attr, budgets, method="auto", dataset=dataset,
                        finetune_config=finetune_config, device=device,
                        quiet=quiet) if budgets else []
        prefix = "auto" + ("-ft" if finetune_config is not None else "")
    else:
        results = prune(run.model, scores, budgets, order=order, codebook=codebook,
                        dataset=dataset, finetune_config=finetune_config, device=device,
                        quiet=quiet) if budgets else []
        prefix = variant_name(scorer, scores.placeholder, order, codebook,
                              finetune_config is not None)
    out_dir = Path(out) if out is not None else run.path / "pruned"
    rows = []
    for result in results:
        name = f"{prefix}-{result.budget.label.replace('=', '-')}"
        info = {**result.info, "artifact_bytes": result.artifact_bytes}
        path = save_pruned(out_dir / name, result.model, info)
        rows.append({**result.row(), "method": method,
                     "placeholder": result.info.get("placeholder"), "path": str(path),
                     "table_bytes": _v1_table_bytes(result.model), "plan": None})
    if searched:  # byte budgets: sparsity x bits x tiers chosen on validation
        rows += [{"method": "byte-search", **row} for row in searched_rows(
            run.model, scores, searched, dataset, out_dir, prefix, shapes=shapes, order=order,
            codebook=codebook, device=device, quiet=quiet)]
    write_results(out_dir, rows)
    return rows


def _v1_table_bytes(model: Any) -> int:
    """Table bytes (values, index, codebook) of a pruned model's fp32 (v1) artifact."""
    from shaver.table.size import predict_table_bytes

    mask = model.embedding.mask.detach().cpu().numpy()
    return predict_table_bytes(model, mask)


def _split_budgets(budgets: Sequence[Budget], table_budgets: Sequence[str], precision: str
                   ) -> tuple[list[tuple[str, str]], list[Budget]]:
    """(searched (axis, size) pairs, budgets for the fp32 pruning path)."""
    if precision not in PRECISIONS:
        raise BudgetError(f"unknown precision {precision!r}: expected one of "
                          f"{', '.join(PRECISIONS)}")
    searched = [("table", str(t)) for t in table_budgets]
    plain = []
    for budget in budgets:
        if budget.kind == "bytes" and precision == "auto":
            searched.append(("artifact", str(budget.value)))
        else:
            plain.append(budget)
    return searched, plain


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
    """Plain-text table: budget, kept, sparsity, bytes, table bytes, AUC, LogLoss, seconds,
    the plan of a byte search and the winning candidate of ``auto``."""
    winners = any(r.get("winner") for r in rows)
    head = f"{'budget':<22} {'kept':>10} {'sparsity':>9} {'bytes':>12} {'table':>10} " \
           f"{'AUC':>8} {'LogLoss':>8} {'seconds':>8}  plan" \
           + ("  winner (on validation)" if winners else "")
    lines = [head, "-" * len(head)]
    for r in rows:
        auc = "n/a" if r.get("auc") is None else f"{r['auc']:.4f}"
        ll = "n/a" if r.get("logloss") is None else f"{r['logloss']:.4f}"
        secs = "" if r.get("seconds") is None else f"{r['seconds']:.3f}"
        table = "" if r.get("table_bytes") is None else str(r["table_bytes"])
        lines.append(f"{r['budget']:<22} {r['kept']:>10} {r['sparsity']:>9.4f} "
                     f"{r['bytes']:>12} {table:>10} {auc:>8} {ll:>8} {secs:>8}  "
                     f"{r.get('plan') or 'fp32 pruning':<14}"
                     + (f"  {r.get('winner') or ''}" if winners else ""))
    return "\n".join(lines)
