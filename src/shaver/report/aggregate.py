"""Summaries of a results table: mean and spread over seeds, and the Pareto frontier."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from shaver.report.schema import ResultRow


@dataclass(frozen=True)
class Summary:
    """Mean and spread over seeds of one (dataset, model, method, budget) cell.

    ``*_std`` is the sample standard deviation (ddof=1), 0.0 when only one seed ran.
    """

    dataset: str
    model: str
    method: str
    budget: str
    seeds: int
    sparsity: float
    kept: int
    table_bytes: int
    artifact_bytes: int | None
    auc: float
    auc_std: float
    logloss: float
    logloss_std: float
    seconds: float
    winners: str = ""  # method "auto": the candidates that won, over the seeds
    finetuned: bool = False  # the cuts fine-tuned after the single shot (drawn apart)

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.dataset, self.model, self.method)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return mean, std


def summarize(rows: Iterable[ResultRow]) -> list[Summary]:
    """One :class:`Summary` per (dataset, model, method, budget, fine-tuned or not), in
    first-seen order."""
    groups: dict[tuple[str, str, str, str, bool], list[ResultRow]] = {}
    for row in rows:
        groups.setdefault((*row.key[:4], bool(row.finetuned)), []).append(row)
    out = []
    for (dataset, model, method, budget, finetuned), members in groups.items():
        auc, auc_std = _mean_std([r.auc for r in members])
        logloss, logloss_std = _mean_std([r.logloss for r in members])
        sizes = [r.artifact_bytes for r in members if r.artifact_bytes is not None]
        out.append(
            Summary(
                dataset=dataset,
                model=model,
                method=method,
                budget=budget,
                seeds=len(members),
                sparsity=float(np.mean([r.sparsity for r in members])),
                kept=round(float(np.mean([r.kept for r in members]))),
                table_bytes=round(float(np.mean([r.table_bytes for r in members]))),
                artifact_bytes=round(float(np.mean(sizes))) if sizes else None,
                auc=auc,
                auc_std=auc_std,
                logloss=logloss,
                logloss_std=logloss_std,
                seconds=float(np.median([r.seconds for r in members])),
                winners=", ".join(dict.fromkeys(r.winner for r in members if r.winner)),
                finetuned=finetuned,
            )
        )
    return out


def pareto_frontier(
    points: Sequence[tuple[float, float]], *, higher_is_better: bool = True
) -> list[int]:
    """Indices of the points not dominated by another (smaller x and better y), sorted by x.

    ``points``: (cost, quality) pairs, e.g. (bytes, AUC). With ``higher_is_better=False``
    quality is a loss (LogLoss). Points with a NaN coordinate are never on the frontier.
    """
    sign = 1.0 if higher_is_better else -1.0
    valid = [
        i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))
    ]
    # Ascending cost; at equal cost the best quality first, so it shadows the others.
    valid.sort(key=lambda i: (points[i][0], -sign * points[i][1]))
    frontier: list[int] = []
    best = -math.inf
    for i in valid:
        quality = sign * points[i][1]
        if quality > best:
            frontier.append(i)
            best = quality
    return frontier
