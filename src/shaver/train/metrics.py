"""Binary CTR metrics: ROC AUC (scikit-learn) and log loss."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import roc_auc_score

log = logging.getLogger(__name__)

#: Probabilities are clipped to [EPS, 1 - EPS] before the log loss (as scikit-learn does).
EPS = 1e-7


def logloss(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (rows,) against 0/1 ``y_true`` (rows,)."""
    y = np.asarray(y_true, dtype=np.float64)
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def auc_logloss(y_true: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """``(auc, logloss)`` of probabilities ``p`` (rows,) for labels ``y_true`` (rows,).

    AUC is NaN (with a warning) when only one class is present, or when there are no rows.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    q = np.asarray(p, dtype=np.float64).reshape(-1)
    if len(y) == 0:
        return float("nan"), float("nan")
    if np.unique(y).size < 2:
        log.warning("AUC is undefined: only one class among %d labels", len(y))
        auc = float("nan")
    else:
        auc = float(roc_auc_score(y, q))
    return auc, logloss(y, q)
