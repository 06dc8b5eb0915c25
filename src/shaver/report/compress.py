"""One benchmark method applied to a trained model at several budgets, measured as result
rows. Pruning goes through ``shaver.pruning.api.prune`` (one sort serves every budget) and
``shaver.pruning.scorers.compute_scores``; post-training quantisation through
``shaver.pruning.quantize``; byte counts through ``shaver.table.size``."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shaver.report.schema import ReportError, ResultRow

log = logging.getLogger(__name__)

#: fp32 bytes per kept value: the authors' count of kept scalars, in bytes.
FP32 = 4


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
    "shaver-bytes": MethodSpec("shaver-bytes", "shapley", "codebook", search=True),
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
    from shaver.table.budget import Budget

    return Budget.sparsity(float(sparsity)).label


def ptq_label(bits: int) -> str:
    return f"int{bits}"


def table_label(fraction: int) -> str:
    return f"table=1/{int(fraction)}"


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
    """The uncompressed model: every entry kept, dense artifact size."""
    from shaver.table.size import predict_artifact_bytes

    n, d = _table(ctx.base)
    size = predict_artifact_bytes(ctx.base, np.ones((n, d), dtype=bool))
    return ctx.row(method="base", budget="full", sparsity=0.0, kept=n * d, total=n * d,
                   kept_bytes=n * d * FP32, artifact_bytes=size, auc=float(test["auc"]),
                   logloss=float(test["logloss"]), seconds=0.0,
                   kept_per_field=_per_field(np.ones((n, d), bool), ctx.base.field_dims))


def _per_field(mask: np.ndarray, field_dims: Sequence[int]) -> list[int]:
    per_row = mask.sum(axis=1)
    bounds = np.cumsum([0, *field_dims])
    return [int(per_row[bounds[f]:bounds[f + 1]].sum()) for f in range(len(field_dims))]


def _evaluate(ctx: CellContext, model: torch.nn.Module) -> tuple[dict[str, Any], float]:
    from shaver.train.loop import evaluate

    started = time.perf_counter()
    metrics = evaluate(model, ctx.dataset, "test", device=ctx.device)
    return metrics, time.perf_counter() - started


def run_method(ctx: CellContext, method: str, labels: Sequence[str],
               attribution: Any = None) -> tuple[list[ResultRow], float]:
    """(result rows of ``method`` at the budgets ``labels``, seconds spent scoring once).

    ``labels``: sparsity labels (``sparsity=0.95``), ``intN`` for ptq, ``table=1/N`` for a
    searched method. A row's ``seconds`` is the cost of one new budget from the sorted scores
    (not the scoring itself; for a searched method, the whole search with its evaluations)."""
    spec = method_spec(method)
    if spec.scorer == "ptq":
        return [_ptq_row(ctx, label) for label in labels], 0.0
    if spec.search:
        rows = [_searched_row(ctx, method, label, attribution) for label in labels]
        return [r for r in rows if r is not None], 0.0
    from shaver.pruning.api import prune
    from shaver.pruning.scorers import compute_scores

    started = time.perf_counter()
    if spec.scorer == "auto":
        results = prune(ctx.base, attribution, labels, method="auto", dataset=ctx.dataset,
                        evaluate=False, device=ctx.device, quiet=ctx.quiet)
        return _rows(ctx, method, results), time.perf_counter() - started
    scores = compute_scores(spec.scorer, ctx.base, attribution=attribution, dataset=ctx.dataset,
                            placeholder=spec.placeholder, seed=ctx.seed, device=ctx.device,
                            quiet=ctx.quiet)
    score_seconds = time.perf_counter() - started
    results = prune(ctx.base, scores, labels, order=spec.order, codebook=spec.codebook,
                    dataset=ctx.dataset, evaluate=False, device=ctx.device, quiet=ctx.quiet)
    return _rows(ctx, method, results), score_seconds


def _rows(ctx: CellContext, method: str, results: Sequence[Any]) -> list[ResultRow]:
    """Result rows of pruned models (each evaluated on test here)."""
    rows = []
    for result in results:
        mask = result.model.embedding.mask.detach().cpu().numpy().astype(bool)
        metrics, eval_seconds = _evaluate(ctx, result.model)
        rows.append(ctx.row(
            method=method, budget=result.budget.label, sparsity=1 - result.kept / result.total,
            kept=result.kept, total=result.total, kept_bytes=result.kept * FP32,
            artifact_bytes=result.artifact_bytes, auc=float(metrics["auc"]),
            logloss=float(metrics["logloss"]),
            seconds=result.seconds,
            eval_seconds=eval_seconds, kept_per_field=_per_field(mask, ctx.base.field_dims),
            winner=result.info.get("winner")))
    return rows


def _searched_row(ctx: CellContext, method: str, label: str,
                  attribution: Any) -> ResultRow | None:
    """The plan ``plan_for_bytes`` picks on validation for a table budget (``table=1/N``);
    None (with a warning naming the minimum) when the budget is below the smallest table.

    ``kept_bytes``: the exact table bytes (kept values, index, scales, codebook)."""
    from shaver.errors import BudgetError
    from shaver.pruning.bytes_search import plan_for_bytes

    started = time.perf_counter()
    try:
        _, record = plan_for_bytes(ctx.base, attribution, label.removeprefix("table="),
                                   ctx.dataset, device=ctx.device, quiet=ctx.quiet)
    except BudgetError as exc:
        log.warning("%s / %s: %s cannot be served: %s", ctx.model_name, method, label, exc)
        return None
    total = record["total"]
    return ctx.row(method=method, budget=label, sparsity=1 - record["kept"] / total,
                   kept=record["kept"], total=total, kept_bytes=record["table_bytes"],
                   artifact_bytes=record["artifact_bytes"], auc=record["metrics"]["auc"],
                   logloss=record["metrics"]["logloss"],
                   seconds=time.perf_counter() - started, kept_per_field=None)


def _ptq_tier_row(ctx: CellContext, label: str, bits: int) -> ResultRow:
    from shaver.runtime.tiered import TierSpec
    from shaver.table.size import predict_tiered_bytes
    from shaver.table.tiers import tiered_copy

    n, d = _table(ctx.base)
    tmap, tiers = np.ones((n, d), np.uint8), [TierSpec(f"int{bits}")]
    started = time.perf_counter()
    model = tiered_copy(ctx.base, tmap, tiers, torch.zeros(len(ctx.base.field_dims), d))
    seconds = time.perf_counter() - started
    artifact, table = predict_tiered_bytes(ctx.base, tmap, tiers)
    metrics, eval_seconds = _evaluate(ctx, model)
    return ctx.row(method="ptq", budget=label, sparsity=0.0, kept=n * d, total=n * d,
                   kept_bytes=table, artifact_bytes=artifact, auc=float(metrics["auc"]),
                   logloss=float(metrics["logloss"]), seconds=seconds,
                   eval_seconds=eval_seconds, kept_per_field=None)


def _ptq_row(ctx: CellContext, label: str) -> ResultRow:
    """Post-training quantisation of the whole table to ``intN``, no pruning.

    int8 / int4 / int2: the v2 artifact's table (one tier, per-field scales; packed values):
    ``kept_bytes`` = its exact table bytes (values + scales), ``artifact_bytes`` exact.
    int16 (no artifact dtype): per-row absmax, bytes counted as ``quantized_artifact_bytes``."""
    bits = int(label.removeprefix("int"))
    if bits in (8, 4, 2):
        return _ptq_tier_row(ctx, label, bits)
    from shaver.pruning.quantize import QuantizeConfig, quantize_, quantized_artifact_bytes

    config = QuantizeConfig(bits=bits, granularity="row")
    started = time.perf_counter()
    model = quantize_(copy.deepcopy(ctx.base), config)
    seconds = time.perf_counter() - started
    sizes = quantized_artifact_bytes(ctx.base, config)
    metrics, eval_seconds = _evaluate(ctx, model)
    n, d = _table(ctx.base)
    return ctx.row(method="ptq", budget=label, sparsity=0.0, kept=n * d, total=n * d,
                   kept_bytes=sizes["values"], artifact_bytes=sizes["total"],
                   auc=float(metrics["auc"]), logloss=float(metrics["logloss"]), seconds=seconds,
                   eval_seconds=eval_seconds, kept_per_field=None)
