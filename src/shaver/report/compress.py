"""One benchmark method applied to a trained model at several budgets, measured as result
rows. Pruning goes through ``shaver.pruning.api.prune`` (one sort serves every budget) and
``shaver.pruning.scorers.compute_scores``; post-training quantisation through
``shaver.pruning.quantize``; byte counts through ``shaver.deploy.size``."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shaver.report.schema import ReportError, ResultRow

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
}
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
    from shaver.pruning.budget import Budget

    return Budget.sparsity(float(sparsity)).label


def ptq_label(bits: int) -> str:
    return f"int{bits}"


def pending_budgets(method: str, sparsities: Sequence[float], ptq_bits: Sequence[int],
                    is_pending: Callable[[str], bool]) -> list[str]:
    """Budget labels of ``method`` whose cells are not finished yet."""
    if method_spec(method).scorer == "ptq":
        labels = [ptq_label(b) for b in ptq_bits]
    else:
        labels = [budget_label(s) for s in sparsities]
    return [label for label in labels if is_pending(label)]


def _table(model: torch.nn.Module) -> tuple[int, int]:
    n, d = model.embedding.weight.shape
    return int(n), int(d)


def base_row(ctx: CellContext, test: dict[str, Any]) -> ResultRow:
    """The uncompressed model: every entry kept, dense artifact size."""
    from shaver.deploy.size import predict_artifact_bytes

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

    ``labels``: sparsity labels (``sparsity=0.95``), or ``intN`` for ptq. A row's ``seconds``
    is the cost of one new budget from the sorted scores (not the scoring itself)."""
    spec = method_spec(method)
    if spec.scorer == "ptq":
        return [_ptq_row(ctx, label) for label in labels], 0.0
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


def _ptq_row(ctx: CellContext, label: str) -> ResultRow:
    """Post-training quantisation (per-row absmax scales) of the whole table to ``intN``.

    ``kept_bytes``: the packed quantised values; ``artifact_bytes``: the pruning stage's count
    of the same artifact with those values in one dense section (head etc. counted alike)."""
    from shaver.pruning.quantize import QuantizeConfig, quantize_, quantized_artifact_bytes

    config = QuantizeConfig(bits=int(label.removeprefix("int")), granularity="row")
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
