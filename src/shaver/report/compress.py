"""One benchmark method applied to a trained model at several budgets, measured as result
rows. EVERY row, the base model and post-training quantisation included, goes through
``shaver.pruning.api.prune`` (the chooser for the default rows, a fixed candidate for the
paper's method and the baselines), so its bytes come from the one size oracle
(``shaver.table.size.plan_bytes``) and its row from ``PruneResult.row``."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shaver.deploy.artifact import export_artifact
from shaver.deploy.fleet_manifest import file_sha256
from shaver.errors import BudgetError
from shaver.pruning.api import prune
from shaver.pruning.scorers import compute_scores
from shaver.report.schema import ReportError, ResultRow
from shaver.runtime.tiered import TierSpec
from shaver.table.budget import Budget
from shaver.table.families import Shape
from shaver.table.size import feature_map_metadata, plan_bytes

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class MethodSpec:
    """How a method name maps onto the pruning API."""

    name: str
    scorer: str  # auto | shapley | magnitude | random | taylor | ptq
    placeholder: str  # codebook | zero
    order: str = "abs"
    codebook: str = "fixed"
    search: bool = False  # budgets are table bytes; sparsity x bits x tiers chosen on val

    @property
    def placeholder_of_attribution(self) -> str | None:
        """The attribution this method needs (its placeholder), or None."""
        return self.placeholder if self.scorer in ("shapley", "auto") else None


_METHODS = {
    # the default of shaver prune: per budget, the best candidate cut on validation
    "auto": MethodSpec("auto", "auto", "codebook"),
    "shaver": MethodSpec("shaver", "shapley", "codebook"),  # the paper's method
    "shaver-signed": MethodSpec("shaver-signed", "shapley", "codebook", order="signed"),
    "shaver-refit": MethodSpec("shaver-refit", "shapley", "codebook", codebook="refit"),
    "shaver-zero": MethodSpec("shaver-zero", "shapley", "zero"),
    # The paper's single-shot baselines replace pruned entries by 0; "-codebook" variants
    # give them Shaver's placeholder, to separate the scorer from the placeholder.
    **{name: MethodSpec(name, name, "zero") for name in ("magnitude", "random", "taylor")},
    **{f"{name}-codebook": MethodSpec(f"{name}-codebook", name, "codebook")
       for name in ("magnitude", "random", "taylor")},
    "ptq": MethodSpec("ptq", "ptq", "zero"),
    # the default for a byte budget: pruning + low-bit values + tiers, chosen on validation
    # the default at table-byte budgets: the same chooser, at 1/N of the fp32 table
    "shaver-bytes": MethodSpec("shaver-bytes", "auto", "codebook", search=True),
}
#: Table-byte budgets of ``shaver-bytes``: 1/N of the fp32 table.
TABLE_FRACTIONS: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
METHODS: tuple[str, ...] = tuple(_METHODS)


def method_spec(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise ReportError(f"unknown method {name!r}: expected one of {', '.join(METHODS)}")
    return _METHODS[name]


@dataclass
class CellContext:
    """What every cell of one (dataset, model, seed) shares."""

    dataset: Any
    dataset_name: str
    model_name: str
    seed: int
    base: torch.nn.Module
    device: str | None = None
    quiet: bool = True

    def row(self, **values: Any) -> ResultRow:
        return ResultRow(dataset=self.dataset_name, model=self.model_name, seed=self.seed,
                         **values)


def budget_label(sparsity: float) -> str:
    return Budget.sparsity(float(sparsity)).label


def ptq_label(bits: int) -> str:
    return f"int{bits}"


def table_label(fraction: int) -> str:
    return Budget.table_bytes(f"1/{int(fraction)}").label


def pending_budgets(method: str, sparsities: Sequence[float], ptq_bits: Sequence[int],
                    is_pending: Callable[[str], bool],
                    table_fractions: Sequence[int] = TABLE_FRACTIONS) -> list[str]:
    """Budget labels of ``method`` whose cells are not finished yet."""
    if method_spec(method).scorer == "ptq":
        labels = [ptq_label(b) for b in ptq_bits]
    elif method_spec(method).search:
        labels = [table_label(f) for f in table_fractions]
    else:
        labels = [budget_label(s) for s in sparsities]
    return [label for label in labels if is_pending(label)]


def _table(model: torch.nn.Module) -> tuple[int, int]:
    n, d = model.embedding.weight.shape
    return int(n), int(d)


def base_row(ctx: CellContext, test: dict[str, Any]) -> ResultRow:
    """The uncompressed model: every entry kept in fp32, sized by the same oracle as every
    other row (feature map included)."""
    n, d = _table(ctx.base)
    artifact, table = plan_bytes(ctx.base, np.ones((n, d), np.uint8), [TierSpec("fp32")],
                                 metadata=feature_map_metadata(ctx.dataset))
    return ctx.row(method="base", budget="full", sparsity=0.0, kept=n * d, total=n * d,
                   table_bytes=table, artifact_bytes=artifact, auc=float(test["auc"]),
                   logloss=float(test["logloss"]), seconds=0.0,
                   kept_per_field=_per_field(np.ones((n, d), bool), ctx.base.field_dims))


def _per_field(mask: np.ndarray, field_dims: Sequence[int]) -> list[int]:
    per_row = mask.sum(axis=1)
    bounds = np.cumsum([0, *field_dims])
    return [int(per_row[bounds[f]:bounds[f + 1]].sum()) for f in range(len(field_dims))]


def run_method(ctx: CellContext, method: str, labels: Sequence[str],
               attribution: Any = None) -> tuple[list[ResultRow], float]:
    """(result rows of ``method`` at the budgets ``labels``, seconds spent scoring once).

    ``labels``: budget labels (``sparsity=0.95``, ``table_bytes=1/16``) or ``intN`` for ptq.
    A row's ``seconds`` is the cost of one budget from the shared scores (choosing and
    building the cut, with the validation passes of the chooser; not the scoring itself)."""
    spec = method_spec(method)
    started = time.perf_counter()
    if spec.scorer == "auto":
        results = _cuts(ctx, attribution, labels, method)
        return _rows(ctx, method, results), time.perf_counter() - started
    if spec.scorer == "ptq":
        scores = compute_scores("magnitude", ctx.base, placeholder="zero")
        results = [prune(ctx.base, scores, [0.0], method="scores", dataset=ctx.dataset,
                         families=[Shape((TierSpec(label),), (1.0,))], device=ctx.device,
                         quiet=ctx.quiet)[0] for label in labels]
        return _rows(ctx, method, results, labels), 0.0
    scores = compute_scores(spec.scorer, ctx.base, attribution=attribution, dataset=ctx.dataset,
                            placeholder=spec.placeholder, seed=ctx.seed, device=ctx.device,
                            quiet=ctx.quiet)
    score_seconds = time.perf_counter() - started
    results = prune(ctx.base, scores, labels, order=spec.order, codebook=spec.codebook,
                    dataset=ctx.dataset, device=ctx.device, quiet=ctx.quiet)
    return _rows(ctx, method, results), score_seconds


def _cuts(ctx: CellContext, attribution: Any, labels: Sequence[str], method: str) -> list[Any]:
    """The chooser's cuts at ``labels`` (for bench method ``method``); a byte budget below
    the smallest artifact is left out with a warning naming the minimum."""
    out = []
    for label in labels:
        try:
            out += prune(ctx.base, attribution, [label], method="auto", dataset=ctx.dataset,
                         device=ctx.device, quiet=ctx.quiet)
        except BudgetError as exc:
            log.warning("%s / %s: %s cannot be served: %s", ctx.model_name, method, label, exc)
    return out


def _rows(ctx: CellContext, method: str, results: Sequence[Any],
          labels: Sequence[str] | None = None) -> list[ResultRow]:
    """Result rows of cuts (their test metrics come from ``prune``; the sha256 of the
    artifact ``shaver export`` writes for each)."""
    rows = []
    for i, result in enumerate(results):
        with tempfile.TemporaryDirectory() as tmp:
            sha = file_sha256(export_artifact(result, Path(tmp) / "a.shaver").path)
        row = result.row()
        mask = result.model.embedding.mask.detach().cpu().numpy().astype(bool)
        rows.append(ctx.row(
            method=method, budget=labels[i] if labels else result.budget.label,
            sparsity=row["sparsity"], kept=row["kept"], total=row["total"],
            table_bytes=row["table_bytes"], artifact_bytes=row["artifact_bytes"],
            auc=float(row["auc"]), logloss=float(row["logloss"]), seconds=row["seconds"],
            kept_per_field=_per_field(mask, ctx.base.field_dims), winner=row["winner"],
            artifact_sha256=sha))
    return rows
