"""Choosing among candidate cuts on validation, within the validation split's own noise.

Two cuts scored on the same validation rows differ in AUC by less than that split can
resolve more often than not (on MovieLens-100k's 10k rows, differences of 0.002-0.004 reverse
between validation and test). The variance of the difference of two AUCs measured on the same
rows is DeLong's (DeLong, DeLong & Clarke-Pearson 1988; the O(n log n) form of Sun & Xu 2014):
per positive and per negative "structural components" of each AUC, and
var(AUC_a - AUC_b) = var(V10_a - V10_b) / positives + var(V01_a - V01_b) / negatives.

Rule (:func:`choose`), the one-standard-error rule of model selection (Breiman et al. 1984;
Hastie, Tibshirani & Friedman, ESL section 7.10) with the paired standard error: b = the
candidate with the best validation AUC; a candidate is TIED with b when
AUC_b - AUC_c <= :data:`Z` x SE(AUC_b - AUC_c). Among the tied candidates, in
this order: the reference (the paper's Shaver) when it is tied; else the fewest kept entries
(at equal quality, the smaller model); then the lower validation LogLoss (the AUCs are equal
within noise, LogLoss is the other measure); then the higher validation AUC. So the default leaves the paper's cut only when validation shows it is
worse, and prefers pruning more when the difference is within noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: A difference within Z standard errors of the best is a tie (the one-standard-error rule).
Z = 1.0
RULE = (f"best validation AUC; candidates within {Z} DeLong standard errors of it are tied, "
        "and among them the paper's Shaver if tied, else the fewest kept entries, then "
        "validation LogLoss, then validation AUC")


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


def choose(records: Sequence[dict[str, Any]], comps: Sequence[tuple], reference: str) -> int:
    """Index of the chosen record ({"name", "kept", "val_auc", "val_logloss"}) under
    :data:`RULE`; ``comps[i]``: components of record i. Sets each record's "tied"."""
    aucs = [r["val_auc"] if math.isfinite(r["val_auc"]) else -math.inf for r in records]
    if not any(math.isfinite(a) for a in aucs):  # one class in validation: LogLoss decides
        for rec in records:
            rec["tied"] = False
        return min(range(len(records)), key=lambda i: (records[i]["val_logloss"], i))
    best = int(np.argmax(aucs))
    for i, rec in enumerate(records):
        if not math.isfinite(aucs[i]):
            rec["tied"] = False
            continue
        se = difference_se(comps[best], comps[i]) if i != best else 0.0
        rec["tied"] = bool(aucs[best] - aucs[i] <= Z * se)
    tied = [i for i, r in enumerate(records) if r["tied"]] or [best]
    ref = [i for i in tied if records[i]["name"] == reference]
    if ref:
        return ref[0]
    return min(tied, key=lambda i: (records[i]["kept"], records[i]["val_logloss"], -aucs[i], i))
