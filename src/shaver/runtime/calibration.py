"""Affine recalibration of a model's logit: ``p = sigmoid(scale * z + bias)`` (numpy only).

Why: CTR probabilities are used as probabilities (bids, blending with other scores), not
only as a ranking. An aggressive cut of the embedding table keeps much of the ranking (AUC)
but shifts and squashes the logit scale, so its probabilities drift away from the click
rate. Two numbers fitted on validation rows (Platt scaling on the logit) restore
calibration at no cost in ranking (an increasing map when ``scale > 0``), at 8 bytes in the
artifact. The constant predictor (the base rate for every row) is the case ``scale = 0``
and the model as it is is ``(1, 0)``: the fit starts from the better of the two and only
takes steps that lower the LogLoss, so on the rows it was fitted on a calibrated cut is
never worse than either, in particular never worse than predicting the base rate.

Where it lives: :func:`fit_logit_calibration` fits; ``shaver.models.base.set_calibration``
puts the pair on a torch model (whose ``forward`` applies it); the artifact stores it in the
fixed-size section :data:`SECTION` (f32 (2,), kind ``head``, format version 2) that
:func:`read_calibration` validates and :meth:`shaver.runtime.Artifact.logits` applies.

Small validation splits: a weak Gaussian prior centred on the model as it is, worth
``prior`` rows (default 1), keeps the pair finite and moderate when few rows are separable
(maximum likelihood would send the scale to infinity and the probabilities to exactly 0 and
1); on 10,000 rows it moves the fit by about 1e-4. A fit that ends worse than the constant
predictor on its rows returns the constant predictor.

Degenerate input: labels of one class only are refused (:class:`DataError`: the maximum
likelihood bias is infinite); constant logits give ``(0, logit(base rate))`` (the scale is
not identifiable; 0 is the constant predictor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from shaver.errors import ArtifactError, DataError

#: Name of the artifact section holding [scale, bias] as float32, and the header field
#: (``"calibration": FORM``) that announces it.
SECTION = "calibration"
FORM = "sigmoid(scale*logit+bias)"
_RIDGE = 1e-9  # relative damping of the Newton system: always solvable, still Newton


def _check(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if z.shape != y.shape or z.size == 0:
        raise DataError(f"calibration needs as many labels as logits (> 0), got "
                        f"{z.size} logits and {y.size} labels")
    if not np.isfinite(z).all():
        raise DataError(f"calibration: {int((~np.isfinite(z)).sum())} logits are NaN or "
                        "infinite, expected finite logits")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("calibration: labels must be 0 or 1, found "
                        f"{float(y[~np.isin(y, (0.0, 1.0))][0]):g}")
    return z, y


def log_losses(logits: Any, labels: Any, scale: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """Per-row LogLoss float64 (n,) of ``sigmoid(scale * logits + bias)`` against ``labels``
    (0/1, (n,)); ``scale=1, bias=0`` scores the logits as they are. Computed stably from the
    logit (``log(1 + exp(-u))`` for a click, ``log(1 + exp(u))`` otherwise)."""
    z, y = _check(logits, labels)
    return _losses(float(scale) * z + float(bias), y)


def _losses(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, np.where(y > 0, -u, u))


def _loss(scale: float, bias: float, z: np.ndarray, y: np.ndarray, prior: float = 0.0) -> float:
    """Mean LogLoss plus the prior's penalty ``prior / (2 n) * ((scale - 1)^2 + bias^2)``."""
    return float(_losses(scale * z + bias, y).mean()
                 + prior / (2 * z.size) * ((scale - 1.0) ** 2 + bias ** 2))


def fit_logit_calibration(logits: Any, labels: Any, *, prior: float = 1.0,
                          max_iter: int = 100) -> tuple[float, float]:
    """``(scale, bias)`` of ``p = sigmoid(scale * logits + bias)``: maximum a posteriori under
    a Gaussian prior centred on ``(1, 0)`` worth ``prior`` rows (``prior=0``: maximum
    likelihood).

    logits: float (n,) the model's logits on validation rows; labels: 0/1 (n,). Newton's
    method in float64 on the penalised mean LogLoss, from the better of the identity ``(1,
    0)`` and the constant predictor ``(0, logit(base rate))``, with a tiny relative ridge on
    the Newton system and step halving, so every accepted step lowers the objective: the
    result's LogLoss on these rows is never above the identity's, and a result above the
    constant predictor's gives the constant predictor. Deterministic. Raises
    :class:`DataError` on labels of one class (see the module docstring); constant logits
    give ``(0, logit(base rate))``.
    """
    z, y = _check(logits, labels)
    rate = float(y.mean())
    if rate in (0.0, 1.0):
        raise DataError(f"calibration needs clicks and non-clicks, but all {y.size} labels "
                        f"are {int(rate)}")
    base = float(np.log(rate) - np.log1p(-rate))
    if z.min() == z.max():
        return 0.0, base
    starts = [(0.0, base), (1.0, 0.0)]
    losses = [_loss(a, b, z, y, prior) for a, b in starts]
    (scale, bias), f = (starts[0], losses[0]) if losses[0] <= losses[1] else (starts[1], losses[1])
    for _ in range(max_iter):
        step = _newton_step(scale, bias, z, y, prior)
        decrement = -float(step @ _gradient(scale, bias, z, y, prior))
        if not decrement > 1e-20:
            break
        t = 1.0
        while t > 2.0 ** -60:
            cand = (scale + t * float(step[0]), bias + t * float(step[1]))
            g = _loss(*cand, z, y, prior)
            if g <= f:
                break
            t *= 0.5
        else:
            break  # no step lowers the loss any more: converged in float64
        done = f - g <= 1e-15 * max(f, 1e-300)
        (scale, bias), f = cand, g
        if done:
            break
    if _loss(scale, bias, z, y) > _loss(0.0, base, z, y):
        return 0.0, base
    return float(scale), float(bias)


def _gradient(scale: float, bias: float, z: np.ndarray, y: np.ndarray,
              prior: float = 0.0) -> np.ndarray:
    r = _sigmoid(scale * z + bias) - y
    return np.array([np.mean(r * z), np.mean(r)]) + prior / z.size * np.array([scale - 1.0, bias])


def _newton_step(scale: float, bias: float, z: np.ndarray, y: np.ndarray,
                 prior: float = 0.0) -> np.ndarray:
    p = _sigmoid(scale * z + bias)
    w = p * (1.0 - p)
    hess = np.array([[np.mean(w * z * z), np.mean(w * z)], [np.mean(w * z), np.mean(w)]])
    hess += np.eye(2) * (prior / z.size)
    hess += np.diag(_RIDGE * np.diag(hess) + 1e-18)
    grad = _gradient(scale, bias, z, y, prior)
    try:
        step = np.linalg.solve(hess, -grad)
    except np.linalg.LinAlgError:  # pragma: no cover - the ridge keeps it invertible
        step = -grad
    return step if np.isfinite(step).all() else -grad  # saturated: a gradient step


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -u))


def apply_calibration(logits: np.ndarray, calibration: tuple[np.float32, np.float32] | None
                      ) -> np.ndarray:
    """float32 logits (batch,) -> ``scale * logits + bias`` in float32 (as torch computes
    it); ``None`` returns ``logits``."""
    if calibration is None:
        return logits
    scale, bias = calibration
    return (logits.astype(np.float32) * np.float32(scale) + np.float32(bias)).astype(np.float32)


def read_calibration(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str,
                     version: int) -> tuple[np.float32, np.float32] | None:
    """The artifact's ``(scale, bias)`` as float32, or None when it has none. Raises
    :class:`ArtifactError` when the header field and the section disagree, the section is
    not two finite float32 numbers, or a format-v1 file claims one (a v1 reader would
    ignore it)."""
    form = header.get("calibration")
    section = arrays.get(SECTION)
    if form is None and section is None:
        return None
    if version < 2:
        raise ArtifactError(f"{where}: a calibration in a format v{version} file, expected "
                            "format v2 or later")
    if form != FORM or section is None or section.dtype != np.float32 \
            or section.shape != (2,) or not np.isfinite(section).all():
        found = "no section" if section is None else f"{section.dtype} {section.shape}"
        raise ArtifactError(f"{where}: malformed calibration: header {form!r} and section "
                            f"{found}, expected {FORM!r} with float32 (2,) finite")
    return section[0], section[1]
