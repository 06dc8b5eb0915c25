"""A byte budget chooses sparsity, bits and tiers: :func:`plan_for_bytes`.

Two axes, said explicitly by ``axis``:

* ``"table"``: bytes of the embedding table in the artifact: kept values, index, scales and
  codebook (what the compression literature counts, plus the index and scales it forgets);
  a budget may also be written as a fraction of the fp32 table, ``"1/16"``;
* ``"artifact"``: the whole artifact file (table, dense head, first-order weights, metadata).

Every plan family of :func:`shaver.table.families.default_shapes` (or the given ``shapes``) is
fitted to the budget on exact bytes and evaluated on the validation split; the best
validation AUC is kept and its test metrics reported.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import BudgetError
from shaver.table.budget import parse_bytes
from shaver.table.families import Shape, TierPlanner, default_shapes
from shaver.table.tiers import tiered_copy

log = logging.getLogger(__name__)
AXES = ("table", "artifact")
_FRACTION_RE = re.compile(r"^\s*1\s*/\s*(\d+)\s*$")


def resolve_table_budget(budget: int | str, fp32_table: int) -> int:
    """Bytes of a table budget: an int, a size (``"40KiB"``) or ``"1/N"`` of the fp32 table."""
    if isinstance(budget, str):
        match = _FRACTION_RE.match(budget)
        if match:
            if int(match.group(1)) == 0:
                raise BudgetError(f"table budget {budget!r}: 1/0 is not a fraction")
            return int(Fraction(fp32_table, int(match.group(1))))
        return parse_bytes(budget)
    if isinstance(budget, bool) or int(budget) != budget or budget <= 0:
        raise BudgetError(f"a byte budget is a positive integer, got {budget!r}")
    return int(budget)


def plan_for_bytes(model: nn.Module, scores: Any, budget: int | str,
                   dataset: PreparedDataset, *, axis: str = "table",
                   shapes: Sequence[Shape] | None = None, order: str = "abs",
                   metadata: dict[str, Any] | None = None, device: str | None = None,
                   codebook: str = "fixed", frequencies: np.ndarray | None = None,
                   evaluate_test: bool = True, test_candidates: bool = False,
                   quiet: bool = True) -> tuple[nn.Module, dict]:
    """The best plan for ``budget`` bytes on ``axis``: (model as the artifact computes it,
    record). ``scores``: Attribution, Scores or (n, d) array (as ``shaver.pruning.prune``).

    The record holds the budget, the chosen plan (tiers, shares, granularity, kept entries),
    its table and artifact bytes, validation and test metrics, and every candidate tried
    (with its test metrics too when ``test_candidates``: for benchmarks, never for choosing).
    ``codebook="refit"`` refits each plan's placeholders on its pruned entries (needs
    ``frequencies``, or the dataset's train+val id counts), as ``shaver.pruning.prune``.
    """
    from shaver.pruning.api import as_scores
    from shaver.table.size import predict_tiered_bytes

    if axis not in AXES:
        raise BudgetError(f"unknown byte axis {axis!r}: expected one of {', '.join(AXES)}")
    scored = as_scores(model, scores, dataset=dataset)
    placeholders = _placeholders(model, scored.codebook, codebook, frequencies, dataset)
    n, d = (int(s) for s in model.embedding.weight.shape)
    limit = resolve_table_budget(budget, n * d * 4) if axis == "table" else \
        (parse_bytes(budget) if isinstance(budget, str) else resolve_table_budget(budget, 1))
    planner = TierPlanner(scored.values, model.field_dims, order)

    def size(tmap: np.ndarray, tiers: Sequence[Any]) -> tuple[int, int]:
        """(artifact bytes, table bytes)."""
        return predict_tiered_bytes(model, tmap, list(tiers), metadata=metadata)

    def fits(tmap: np.ndarray, tiers: Sequence[Any]) -> bool:
        if axis == "table":  # the table alone: no head to lay out
            return planner.table_bytes(tmap, tiers) <= limit
        return size(tmap, tiers)[0] <= limit

    chosen_by_user = shapes is not None
    shapes = list(shapes) if shapes is not None else default_shapes()
    fitted = _fit_all(planner, shapes, fits)
    if not fitted:
        _refuse(planner, shapes, size, axis, limit)
    if chosen_by_user and all(kept == 0 for _, kept, _ in fitted):
        _refuse_tiers(planner, shapes, size, axis, limit)
    candidates = _evaluate(model, fitted, placeholders, dataset, size, device, quiet,
                           test_candidates)
    best = max(candidates, key=lambda c: (c["val"]["auc"], -c["table_bytes"]))
    shape = next(s for s in shapes if s.label == best["plan"])
    tmap = planner.tier_map(shape, best["kept_units"])
    chosen = tiered_copy(model, tmap, shape.tiers, placeholders(tmap))
    record = {**best, "budget": {"kind": "table_bytes" if axis == "table" else "bytes",
                                 "value": limit, "label": f"{axis}-bytes={limit}"},
              "scorer": scored.scorer, "order": order, "codebook": codebook,
              "placeholder": "codebook" if codebook == "refit" else scored.placeholder,
              "tiers": [t.to_json() for t in shape.tiers], "shares": list(shape.shares),
              "granularity": shape.granularity, "total": n * d, "candidates": candidates}
    if evaluate_test:
        from shaver.train.evaluation import evaluate

        test = evaluate(chosen, dataset, "test", device=device)
        record["metrics"] = {"auc": float(test["auc"]), "logloss": float(test["logloss"])}
    return chosen.eval(), record


def _placeholders(model: nn.Module, fixed: Any, mode: str, frequencies: np.ndarray | None,
                  dataset: PreparedDataset) -> Any:
    """tier map -> the (m, d) placeholder of its pruned entries (fixed or refit)."""
    from shaver.pruning.api import FREQUENCY_DATA
    from shaver.pruning.codebook import check_codebook_mode, refit_codebook
    from shaver.pruning.scorers import data_frequencies

    if check_codebook_mode(mode) == "fixed":
        return lambda tmap: fixed
    freq = frequencies if frequencies is not None else data_frequencies(dataset, FREQUENCY_DATA)
    return lambda tmap: refit_codebook(model.embedding.weight, tmap > 0, model.field_dims, freq,
                                       fixed)


def _fit_all(planner: TierPlanner, shapes: Sequence[Shape], fits: Any
             ) -> list[tuple[Shape, int, np.ndarray]]:
    out, seen = [], set()
    for shape in shapes:
        found = planner.fit(shape, fits)
        if found is None:
            continue
        kept, tmap = found
        key = (tuple(t.label for t in shape.tiers), shape.granularity, kept) if kept else "none"
        if key not in seen:  # every family reduces to the same plan with nothing kept
            seen.add(key)
            out.append((shape, kept, tmap))
    return out


def _refuse(planner: TierPlanner, shapes: Sequence[Shape], size: Any, axis: str,
            limit: int) -> None:
    index = 0 if axis == "artifact" else 1
    minimum = min(size(planner.tier_map(s, 0), s.tiers)[index] for s in shapes)
    parts = "codebook" if axis == "table" else \
        "codebook, dense head, first-order weights and metadata"
    raise BudgetError(f"budget of {limit} bytes is below the minimum {axis} size of "
                      f"{minimum} bytes (every embedding entry pruned: {parts})")


def _refuse_tiers(planner: TierPlanner, shapes: Sequence[Shape], size: Any, axis: str,
                  limit: int) -> None:
    from shaver.runtime.lowbit import TIER_DTYPES

    index = 0 if axis == "artifact" else 1
    needed = min(size(planner.tier_map(s, 1), s.tiers)[index] for s in shapes)
    labels = ", ".join(s.label for s in shapes)
    raise BudgetError(f"tiers {labels} do not fit {limit} {axis} bytes: keeping a single "
                      f"entry takes {needed} bytes; give a larger budget, or fewer bits "
                      f"(value dtypes: {', '.join(TIER_DTYPES)}; scales: field, row)")


def _evaluate(model: nn.Module, fitted: Sequence[tuple[Shape, int, np.ndarray]],
              codebook: Any, dataset: PreparedDataset, size: Any, device: str | None,
              quiet: bool, test: bool = False) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from shaver.train.evaluation import evaluate

    out = []
    for shape, kept, tmap in tqdm(fitted, desc="plans", disable=quiet, leave=False):
        candidate = tiered_copy(model, tmap, shape.tiers, codebook(tmap))
        val = evaluate(candidate, dataset, "val", device=device)
        artifact, table = size(tmap, shape.tiers)
        row = {"plan": shape.label, "kept_units": int(kept),
               "kept": int(np.count_nonzero(tmap)), "table_bytes": int(table),
               "artifact_bytes": int(artifact),
               "val": {"auc": float(val["auc"]), "logloss": float(val["logloss"])}}
        if test:
            metrics = evaluate(candidate, dataset, "test", device=device)
            row["test"] = {"auc": float(metrics["auc"]), "logloss": float(metrics["logloss"])}
        out.append(row)
        log.debug("%s: kept %d, %d table bytes, val auc %.4f", shape.label, kept, table,
                  val["auc"])
    return out
