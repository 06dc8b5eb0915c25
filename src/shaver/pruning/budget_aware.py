"""Budget-aware cuts: rank by the semivalue of the coalition sizes a budget runs the model on.

For a budget, the target is the kept fraction of an average sample's ACTIVE entries at that
cut (:func:`shaver.attribution.semivalue.active_kept_fraction`, frequency-weighted), not
1 - sparsity: kept entries sit on frequent rows. It is found by a short fixed point: start
from the paper's |phi| cut, score with the semivalue centred on its active kept fraction, cut,
measure again (``rounds`` times). The scores come from the attribution's bins: no new walks.
"""

from __future__ import annotations

from typing import Any

from shaver.attribution.semivalue import active_kept_fraction, require_bins, semivalue_scores
from shaver.pruning.scorers import Scores, shapley_scores
from shaver.table.budget import Budget

#: Fixed-point rounds of the target kept fraction.
ROUNDS = 2


def budget_aware_scores(attribution: Any, target: float | None) -> Scores:
    """Scores (scorer "budget-aware") of the semivalue centred on kept fraction ``target``."""
    require_bins(attribution)
    return Scores(semivalue_scores(attribution, target), "budget-aware",
                  attribution.placeholder, attribution.codebook,
                  attribution.model_fingerprint or None, attribution.dataset_fingerprint or None)


def _target_fraction(pruner, budget: Budget, frequencies) -> float:
    mask = pruner.order.mask(pruner.resolve(budget))
    return active_kept_fraction(mask, frequencies)


def budget_aware_cut(ctx, budget: Budget, *, order: str = "abs", zero: bool = False,
                     rounds: int = ROUNDS):
    """The budget-aware cut of ``budget`` for an :class:`~shaver.pruning.auto.AutoContext`;
    ``zero``: same ranking, 0 as placeholder. Scores are cached per (budget, order)."""
    from shaver.pruning.auto import zero_placeholder

    key = ("budget-aware", budget.label, order)
    if key not in ctx.cache:
        if "paper" not in ctx.cache:
            ctx.cache["paper"] = ctx.pruner(shapley_scores(ctx.attribution))
        target = _target_fraction(ctx.cache["paper"], budget, ctx.frequencies)
        for _ in range(max(1, rounds)):
            centre = target
            scores = budget_aware_scores(ctx.attribution, centre)
            pruner = ctx.pruner(scores, order=order)
            target = _target_fraction(pruner, budget, ctx.frequencies)
        ctx.cache[key] = (scores, pruner, {"semivalue_centre": centre,
                                           "active_kept_fraction": target})
    scores, pruner, record = ctx.cache[key]
    if zero:
        pruner = ctx.pruner(zero_placeholder(scores), order=order)
    result = pruner.cut(budget)
    result.info.update(record)
    return result
