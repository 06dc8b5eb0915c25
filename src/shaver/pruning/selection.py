"""Choosing among candidate cuts on validation, within the validation split's own noise.

Two cuts scored on the same validation rows differ in AUC by less than that split can
resolve more often than not (on MovieLens-100k's 10k rows, differences of 0.002-0.004 reverse
between validation and test). The variance of the difference of two AUCs measured on the same
rows is DeLong's (DeLong, DeLong & Clarke-Pearson 1988; the O(n log n) form of Sun & Xu 2014):
per positive and per negative "structural components" of each AUC, and
var(AUC_a - AUC_b) = var(V10_a - V10_b) / positives + var(V01_a - V01_b) / negatives.

Rule (:func:`choose`), the one-standard-error rule of model selection (Breiman et al. 1984;
Hastie, Tibshirani & Friedman, ESL section 7.10) applied to BOTH measures a CTR model is used
for, ranking (AUC) and probabilities (LogLoss, after each candidate's own recalibration):

1. a candidate is TIED when its validation AUC is within :data:`Z` paired standard errors of
   the best AUC (DeLong) AND its validation LogLoss within :data:`Z` paired standard errors of
   the best LogLoss (the per-row loss differences on the same rows);
2. when no candidate is tied on both (a trade-off the split can resolve), the candidates tied
   on AUC alone are kept and the lowest LogLoss among them wins;
3. among the tied: the reference (the paper's Shaver) when it is tied; else, for a kept-entry
   budget, the fewest kept entries (pruning more at equal quality), then the lower LogLoss,
   then the higher AUC; for a byte budget, whose bytes the user has already granted, the
   higher AUC, then the lower LogLoss (a smaller file than the budget is worth nothing more).

So the default leaves the paper's cut only when validation shows it is worse, never keeps a
cut whose probabilities are clearly worse than another's, and prefers the smaller model
within noise only where the budget counts entries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: A difference within Z standard errors of the best is a tie (the one-standard-error rule).
Z = 1.0
RULE = (f"candidates within {Z} paired standard errors of the best validation AUC (DeLong) "
        f"and of the best recalibrated validation LogLoss are tied (none: the lowest LogLoss "
        f"among those tied on AUC); among them the paper's Shaver if tied, else for a "
        f"kept-entry budget the fewest kept entries, then LogLoss, then AUC, and for a byte "
        f"budget the higher AUC, then LogLoss")


def midranks(values: np.ndarray) -> np.ndarray:
    """float64 ranks 1..n of ``values``, ties sharing their mean rank."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return ranks


def components(labels: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, V10 per positive, V01 per negative) of ``scores`` for 0/1 ``labels``."""
    y = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(scores)[y], np.asarray(scores)[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return float("nan"), np.zeros(m), np.zeros(n)
    both = midranks(np.concatenate([pos, neg]))
    v10 = (both[:m] - midranks(pos)) / n
    v01 = 1.0 - (both[m:] - midranks(neg)) / m
    return float(v10.mean()), v10, v01


def difference_se(a: tuple[float, np.ndarray, np.ndarray],
                  b: tuple[float, np.ndarray, np.ndarray]) -> float:
    """DeLong standard error of AUC_a - AUC_b (same rows; components from :func:`components`)."""
    d10, d01 = a[1] - b[1], a[2] - b[2]
    if len(d10) < 2 or len(d01) < 2:
        return float("inf")
    return math.sqrt(d10.var(ddof=1) / len(d10) + d01.var(ddof=1) / len(d01))


def loss_difference_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of mean(a) - mean(b) for per-row losses of the same rows."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(diff) < 2:
        return float("inf")
    return float(diff.std(ddof=1) / math.sqrt(len(diff)))


def choose(records: Sequence[dict[str, Any]], comps: Sequence[tuple],
           losses: Sequence[np.ndarray], reference: str, size_key: str | None = "kept") -> int:
    """Index of the chosen record ({"name", ``size_key``, "val_auc", "val_logloss"}) under
    :data:`RULE`; ``comps[i]``: DeLong components of record i, ``losses[i]``: its per-row
    validation losses; ``size_key``: the size preferred small among the tied (None: a byte
    budget, no size preference). Sets each record's "tied"."""
    aucs = [r["val_auc"] if math.isfinite(r["val_auc"]) else -math.inf for r in records]
    lls = [r["val_logloss"] if math.isfinite(r["val_logloss"]) else math.inf for r in records]
    best_ll = int(np.argmin(lls))
    ll_tied = [lls[i] - lls[best_ll] <= Z * loss_difference_se(losses[i], losses[best_ll])
               if i != best_ll else True for i in range(len(records))]
    if not any(math.isfinite(a) for a in aucs):  # one class in validation: LogLoss decides
        auc_tied = [True] * len(records)
    else:
        best = int(np.argmax(aucs))
        auc_tied = [math.isfinite(aucs[i]) and (
            i == best or aucs[best] - aucs[i] <= Z * difference_se(comps[best], comps[i]))
            for i in range(len(records))]
    both = [i for i in range(len(records)) if auc_tied[i] and ll_tied[i]]
    if not both:
        both = [min((i for i in range(len(records)) if auc_tied[i]), key=lambda i: lls[i])]
    for i, rec in enumerate(records):
        rec["tied"] = i in both
    ref = [i for i in both if records[i]["name"] == reference]
    if ref:
        return ref[0]
    if size_key is None:
        return min(both, key=lambda i: (-aucs[i], lls[i], i))
    return min(both, key=lambda i: (records[i][size_key], lls[i], -aucs[i], i))
