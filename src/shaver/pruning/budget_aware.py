"""Budget-aware rankings: rank by the semivalue of the coalition sizes a budget runs the model on.

For a cut keeping K entries, the target is the kept fraction of an average sample's ACTIVE
entries (:func:`shaver.attribution.semivalue.active_kept_fraction`, frequency-weighted), not
K / total: kept entries sit on frequent rows. It is found by a short fixed point: start from
the paper's |phi| cut at K, score with the semivalue centred on its active kept fraction,
cut at K, measure again (``rounds`` times). The scores come from the attribution's bins: no
new walks. The chooser asks for them at the kept count of the paper's fp32 cut of a budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shaver.attribution.semivalue import active_kept_fraction, require_bins, semivalue_scores
from shaver.pruning.rankings import Ranking, zero_placeholder
from shaver.pruning.scorers import Scores, shapley_scores
from shaver.table.order import PruneOrder

#: Fixed-point rounds of the target kept fraction.
ROUNDS = 2


def budget_aware_scores(attribution: Any, target: float | None) -> Scores:
    """Scores (scorer "budget-aware") of the semivalue centred on kept fraction ``target``."""
    require_bins(attribution)
    return Scores(semivalue_scores(attribution, target), "budget-aware",
                  attribution.placeholder, attribution.codebook,
                  attribution.model_fingerprint or None, attribution.dataset_fingerprint or None)


def budget_aware_rankings(attribution: Any, kept: int, frequencies: np.ndarray,
                          rounds: int = ROUNDS) -> tuple[list[Ranking], dict[str, float]]:
    """(the budget-aware rankings at ``kept`` entries: the attribution's placeholder, 0, and
    the signed order; the fixed point's record). Needs the attribution's bins."""
    scores = shapley_scores(attribution)
    target = active_kept_fraction(PruneOrder(scores.values, "abs").mask(kept), frequencies)
    centre = target
    for _ in range(max(1, rounds)):
        centre = target
        scores = budget_aware_scores(attribution, centre)
        target = active_kept_fraction(PruneOrder(scores.values, "abs").mask(kept), frequencies)
    record = {"semivalue_centre": float(centre), "active_kept_fraction": float(target)}
    return [Ranking("budget-aware", scores), Ranking("budget-aware/zero", zero_placeholder(scores)),
            Ranking("budget-aware/signed", scores, order="signed")], record
