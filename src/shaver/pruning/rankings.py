"""Rankings: the orders of the table's entries a cut can follow, each with its placeholder.

A :class:`Ranking` says which entries go first (its scores and order) and what a pruned entry
reads (the scores' codebook, fixed, or refit on each plan's pruned entries). The chooser
(:mod:`shaver.pruning.chooser`) crosses rankings with plan families and head precisions.

:func:`default_rankings` are the candidates of the default cut, all from ONE attribution
plus two cheap single-shot scorers:

* ``shaver``: the paper's (|phi|, the attribution's codebook, fixed); ``shaver/zero``: the
  same order with 0 as placeholder; ``shaver/refit``: the codebook refit on the pruned entries;
* ``budget-aware`` (``/zero``, ``/signed``): the semivalue of the coalition sizes the budget
  runs the model on (:mod:`shaver.pruning.budget_aware`), when the attribution has bins;
  it depends on the budget, so it is built per kept-entry budget;
* ``magnitude`` and ``taylor`` with 0 as placeholder (the paper's baselines).

Every plan with nothing kept is the same whatever the order, so the floors (every entry
pruned, codebook or zero placeholder) come out of the fitting of any ranking.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.pruning.codebook import refit_codebook
from shaver.pruning.scorers import Scores, compute_scores, shapley_scores
from shaver.table.order import check_order

log = logging.getLogger(__name__)

#: The paper's Shaver: the reference every other candidate must beat on validation.
PAPER = "shaver"


@dataclass(frozen=True)
class Ranking:
    """``scores`` ordered by ``order`` (abs | signed); pruned entries read the scores'
    codebook, refit on each plan's pruned entries when ``refit``."""

    name: str
    scores: Scores
    order: str = "abs"
    refit: bool = False

    def __post_init__(self) -> None:
        check_order(self.order)

    @property
    def placeholder(self) -> str:
        return "codebook" if self.refit else self.scores.placeholder

    def codebook(self, model: nn.Module, tier_map: np.ndarray,
                 frequencies: np.ndarray | None) -> torch.Tensor:
        """(m, d) placeholder of the pruned entries of ``tier_map``."""
        if not self.refit:
            return self.scores.codebook
        return refit_codebook(model.embedding.weight, tier_map > 0, model.field_dims,
                              frequencies, self.scores.codebook)

    def describe(self) -> dict[str, Any]:
        return {"ranking": self.name, "scorer": self.scores.scorer, "order": self.order,
                "codebook": "refit" if self.refit else "fixed",
                "placeholder": self.placeholder}


def zero_placeholder(scores: Scores) -> Scores:
    """The same ranking with 0 as placeholder."""
    return Scores(scores.values, scores.scorer, "zero", torch.zeros_like(scores.codebook),
                  scores.model_fingerprint, scores.dataset_fingerprint)


def attribution_rankings(attribution: Any) -> list[Ranking]:
    """The paper's ranking of ``attribution`` and its two placeholder variants."""
    scores = shapley_scores(attribution)
    out = [Ranking(PAPER, scores)]
    if scores.placeholder == "codebook":
        out.append(Ranking(f"{PAPER}/zero", zero_placeholder(scores)))
    out.append(Ranking(f"{PAPER}/refit", scores, refit=True))
    return out


#: The paper's single-shot baselines among the default's candidates.
SINGLE_SHOT = ("magnitude", "taylor")


def single_shot_rankings(model: nn.Module, dataset: PreparedDataset, data: str, *,
                         device: str | torch.device | None = None,
                         quiet: bool = True) -> dict[str, Callable[[], Ranking]]:
    """Magnitude |w| and Taylor |w dL/dw| with the zero placeholder (the paper's baselines),
    each built when first asked for; Taylor's gradients are accumulated over the
    attribution's splits ``data``."""
    def make(scorer: str) -> Callable[[], Ranking]:
        return lambda: Ranking(scorer, compute_scores(scorer, model, dataset=dataset,
                                                      placeholder="zero", data=data,
                                                      device=device, quiet=quiet))

    return {scorer: make(scorer) for scorer in SINGLE_SHOT}
