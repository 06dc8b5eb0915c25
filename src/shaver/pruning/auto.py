"""``auto``: at every budget, the best of several single-shot cuts, chosen on validation.

No ranking wins at every budget on every model (bench/pruning/README.md): at sparsity >= 0.99
the paper's Shapley ranking can lose to magnitude and even to pruning everything. ``auto``
builds every registered candidate cut for a budget, scores each on the VALIDATION split and
chooses by validation AUC within the split's own noise (:mod:`shaver.pruning.selection`:
candidates within one DeLong standard error of the best are tied; among them the paper's
Shaver if tied, else the fewest kept entries); only the winner is evaluated on test, by the
caller. All Shapley candidates
come from ONE attribution (the paper's walks, their bins included), so auto costs the same
attribution as the paper's Shaver, plus one validation pass per candidate and budget.

Selection is only as honest as the validation split is unseen: an attribution computed on
``train+val`` (the paper's data; ``shaver attribute`` defaults to ``train``) has seen the
validation labels, which favours the Shapley candidates in the selection.
``info["auto"]["validation_in_attribution"]`` says so (and a warning is logged); attribute on
``train`` (the default) to keep validation clean.

A candidate is a name and a function ``budget -> PruneResult`` (a pruned model, no
evaluation). Candidates come from factories in :data:`CANDIDATES`; a factory gets the
:class:`AutoContext` and returns its candidates (none when it cannot serve, e.g. budget-aware
scores of an attribution without bins). More can be added with :func:`register_candidates`
(e.g. mixed-precision plans for byte budgets).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import ShaverError
from shaver.pruning.budget import Budget
from shaver.pruning.scorers import Scores, compute_scores, data_frequencies, shapley_scores
from shaver.pruning.selection import RULE, choose, components

log = logging.getLogger(__name__)

SELECTION = RULE


class AutoError(ShaverError):
    """``auto`` cannot run (no validation split, no attribution)."""


@dataclass
class AutoContext:
    """What the candidates share: base model, its attribution, the data, byte-count options."""

    model: nn.Module
    attribution: Any
    dataset: PreparedDataset
    frequencies: np.ndarray
    value_dtype: str = "fp32"
    size_metadata: dict[str, Any] | None = None
    device: str | torch.device | None = None
    quiet: bool = True
    cache: dict[str, Any] = field(default_factory=dict)

    def pruner(self, scores: Any, *, order: str = "abs", codebook: str = "fixed"):
        from shaver.pruning.api import Pruner

        return Pruner(self.model, scores, order=order, codebook=codebook, dataset=self.dataset,
                      frequencies=self.frequencies, value_dtype=self.value_dtype,
                      size_metadata=self.size_metadata)


@dataclass
class Candidate:
    """One way to cut: ``cut(budget)`` -> PruneResult (pruned model, not evaluated)."""

    name: str
    cut: Callable[[Budget], Any]


CandidateFactory = Callable[[AutoContext], list[Candidate]]
CANDIDATES: dict[str, CandidateFactory] = {}


def register_candidates(name: str, factory: CandidateFactory) -> None:
    """Add (or replace) a factory of candidates under ``name``."""
    CANDIDATES[name] = factory


def zero_placeholder(scores: Scores) -> Scores:
    """The same ranking with 0 as placeholder."""
    return Scores(scores.values, scores.scorer, "zero", torch.zeros_like(scores.codebook),
                  scores.model_fingerprint, scores.dataset_fingerprint)


def _paper(ctx: AutoContext) -> list[Candidate]:
    """The paper's Shaver (codebook phi, |phi| order, fixed codebook), the same ranking with
    the zero placeholder and with the codebook refit on the pruned entries, and the floor
    (every entry pruned) with either placeholder."""
    scores = shapley_scores(ctx.attribution)
    if "paper" not in ctx.cache:
        ctx.cache["paper"] = ctx.pruner(scores)
    paper, zero = ctx.cache["paper"], ctx.pruner(zero_placeholder(scores))
    refit = ctx.pruner(scores, codebook="refit")
    name = "shaver" if scores.placeholder == "codebook" else "shaver-zero"
    out = [Candidate(name, paper.cut), Candidate(f"{name}/refit", refit.cut),
           Candidate("floor/codebook", lambda b: paper.cut(b, 0)),
           Candidate("floor/zero", lambda b: zero.cut(b, 0))]
    if scores.placeholder == "codebook":
        out.insert(1, Candidate(f"{name}/zero-placeholder", zero.cut))
    return out


def _budget_aware(ctx: AutoContext) -> list[Candidate]:
    """Budget-aware semivalue scores of the same walks (:mod:`shaver.attribution.semivalue`)."""
    if getattr(ctx.attribution, "bins", None) is None:
        log.info("auto: the attribution has no bins; no budget-aware candidates")
        return []
    from shaver.pruning.budget_aware import budget_aware_cut

    def make(order: str, zero: bool) -> Callable[[Budget], Any]:
        return lambda budget: budget_aware_cut(ctx, budget, order=order, zero=zero)

    return [Candidate("budget-aware", make("abs", False)),
            Candidate("budget-aware/zero-placeholder", make("abs", True)),
            Candidate("budget-aware/signed", make("signed", False))]


def _single_shot(ctx: AutoContext) -> list[Candidate]:
    """Magnitude |w| and Taylor |w dL/dw| with the zero placeholder (the paper's baselines)."""
    data = str(ctx.attribution.settings.get("data", "train+val")).split(":")[0]
    out = []
    for scorer in ("magnitude", "taylor"):
        scores = compute_scores(scorer, ctx.model, dataset=ctx.dataset, placeholder="zero",
                                data=data, device=ctx.device, quiet=ctx.quiet)
        out.append(Candidate(scorer, ctx.pruner(scores).cut))
    return out


register_candidates("shaver", _paper)
register_candidates("budget-aware", _budget_aware)
register_candidates("single-shot", _single_shot)


def check_validation(dataset: PreparedDataset | None) -> PreparedDataset:
    """The dataset, if it has a non-empty validation split; else :class:`AutoError`."""
    hint = ("method 'auto' chooses each budget's cut on the validation split: give a "
            "prepared dataset with a non-empty 'val' split, or use method 'shaver' (the "
            "paper's ranking, no validation needed)")
    if dataset is None:
        raise AutoError(f"no dataset given; {hint}")
    try:
        rows = dataset.num_rows("val")
    except (KeyError, ShaverError):
        rows = 0
    if rows <= 0:
        raise AutoError(f"{dataset.path}: no validation rows; {hint}")
    return dataset


def _validation(model: nn.Module, ctx: AutoContext) -> tuple[dict[str, float], tuple]:
    """Validation AUC / LogLoss of ``model`` and its DeLong components."""
    from shaver.train.evaluation import predict_proba
    from shaver.train.metrics import auc_logloss

    if "val" not in ctx.cache:
        ctx.cache["val"] = (ctx.dataset.ids("val"), np.asarray(ctx.dataset.labels("val")))
    x, y = ctx.cache["val"]
    chunk = 1 << 18  # rows copied out of the memory map at a time
    p = np.concatenate([predict_proba(model, np.array(x[lo:lo + chunk]), device=ctx.device)
                        for lo in range(0, len(x), chunk)]) if len(x) else np.zeros(0)
    auc, logloss = auc_logloss(y, p)
    return {"auc": auc, "logloss": logloss}, components(y, p)


def check_fits(name: str, budget: Budget, result: Any) -> None:
    """Raise :class:`AutoError` when candidate ``name``'s cut does not fit ``budget``."""
    if budget.kind == "bytes":
        fits, used = result.artifact_bytes <= budget.value, f"{result.artifact_bytes} bytes"
    else:
        fits, used = result.kept <= budget.kept_entries(result.total), f"{result.kept} entries"
    if not fits:
        raise AutoError(f"candidate {name!r} does not fit {budget.label}: it keeps {used}")


def auto_cut(candidates: Sequence[Candidate], ctx: AutoContext, budget: Budget):
    """Every candidate's cut at ``budget``, scored on validation -> the winner's PruneResult
    with ``info["auto"]`` = {winner, selection, candidates: [{name, kept, bytes, val_auc, tied,
    val_logloss}]}."""
    records, comps = [], []
    for candidate in candidates:
        result = candidate.cut(budget)
        check_fits(candidate.name, budget, result)
        val, comp = _validation(result.model, ctx)
        records.append({"name": candidate.name, "kept": result.kept,
                        "bytes": result.artifact_bytes, "val_auc": val["auc"],
                        "val_logloss": val["logloss"]})
        comps.append(comp)
        del result  # only the winner is kept: it is cut again below (cuts are deterministic)
        log.debug("auto %s: %s val AUC %.4f", budget.label, candidate.name, val["auc"])
    reference = "shaver" if ctx.attribution.placeholder == "codebook" else "shaver-zero"
    index = choose(records, comps, reference)
    best = candidates[index].cut(budget)
    best.info.update(scorer="auto", winner=candidates[index].name,
                     auto={"winner": candidates[index].name, "selection": SELECTION,
                           "candidates": records,
                           "validation_in_attribution": saw_validation(ctx.attribution)})
    return best


def saw_validation(attribution: Any) -> bool:
    """Whether the attribution's data included the validation split."""
    data = str(getattr(attribution, "settings", {}).get("data", "train+val"))
    return "val" in data.split(":")[0].split("+")


def prune_auto(model: nn.Module, attribution: Any, budgets: Sequence[Budget], *,
               dataset: PreparedDataset | None, frequencies: np.ndarray | None = None,
               value_dtype: str = "fp32", size_metadata: dict[str, Any] | None = None,
               device: str | torch.device | None = None, quiet: bool = True,
               factories: Sequence[str] | None = None) -> list[Any]:
    """The auto cut at every budget (see the module doc); ``factories``: names in
    :data:`CANDIDATES` to use (default all). Not evaluated on test."""
    if not (hasattr(attribution, "phi") and hasattr(attribution, "codebook")):
        raise AutoError("method 'auto' needs an Attribution (shaver attribute) to build its "
                        "Shapley candidates; pass method='scores' to prune by given scores")
    from shaver.pruning.api import Pruner

    # the attribution and every budget are checked before anything else
    paper = Pruner(model, attribution, dataset=dataset, frequencies=frequencies,
                   value_dtype=value_dtype, size_metadata=size_metadata)
    for budget in budgets:
        paper.resolve(budget)
    dataset = check_validation(dataset)
    if frequencies is None:
        frequencies = data_frequencies(dataset, "train+val")
    ctx = AutoContext(model, attribution, dataset, frequencies, value_dtype, size_metadata,
                      device, quiet, cache={"paper": paper})
    if saw_validation(attribution):
        log.warning("auto: the attribution was computed on data including the validation "
                    "split, so its Shapley candidates are favoured in the selection; "
                    "attribute with data='train' (--data train) for an unbiased choice")
    names = list(CANDIDATES) if factories is None else list(factories)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise AutoError(f"unknown candidate factories {unknown}: expected some of "
                        f"{', '.join(CANDIDATES)}")
    candidates = [c for name in names for c in CANDIDATES[name](ctx)]
    return [auto_cut(candidates, ctx, budget) for budget in budgets]
