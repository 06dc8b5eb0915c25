"""THE cut chooser: which plan of the table serves a budget. Every door calls it.

``shaver prune`` (every budget kind), :func:`shaver.prune`, ``shaver fleet`` (a class is an
artifact-bytes budget plus the precisions it allows) and the default rows of ``shaver
bench`` all go through :meth:`Chooser.choose`, so one budget gets one model, whichever door
it came in by.

A candidate is a ranking (:mod:`shaver.pruning.rankings`) x a plan family (tiers and
shares, :mod:`shaver.table.families`) x a head precision. Each is fitted to the budget by ONE
binary search over ONE size oracle (:func:`shaver.table.size.plan_bytes`; a kept-entry budget
fixes the count instead), built as the artifact computes it (quantised tiers, quantised
head, its own logit recalibration fitted on validation), and scored on the validation split;
one rule (:mod:`shaver.pruning.selection`: AUC and LogLoss within their paired standard
errors) picks the winner. A single fixed candidate (the paper's method, a baseline scorer)
skips validation and recalibration: it is exactly that method's cut.

Which candidates: :func:`shaver.pruning.candidates.candidates_for`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import BudgetError, ShaverError
from shaver.models.base import calibrate, calibration_of, clear_calibration, set_calibration
from shaver.progress import progress_bar
from shaver.pruning.budget_aware import budget_aware_rankings
from shaver.pruning.candidates import FP32, Candidate, ChooserError
from shaver.pruning.rankings import PAPER, Ranking
from shaver.pruning.selection import RULE, choose, components
from shaver.runtime.calibration import fit_logit_calibration, log_losses
from shaver.table.budget import Budget
from shaver.table.families import TierPlanner
from shaver.table.size import plan_bytes
from shaver.table.tiers import plan_copy
from shaver.train.checkpoint import model_fingerprint
from shaver.train.device import pick_device
from shaver.train.evaluation import source_logits
from shaver.train.metrics import auc_logloss
from shaver.train.source import SplitSource

log = logging.getLogger(__name__)

@dataclass
class Fitted:
    """A candidate fitted to a budget: its tier map, kept entries and exact sizes."""

    candidate: Candidate
    tier_map: np.ndarray
    kept: int
    artifact_bytes: int
    table_bytes: int

    @property
    def name(self) -> str:
        """The candidate's name; ``floor/<placeholder>`` when nothing is kept (the same plan
        whatever the ranking)."""
        if self.kept:
            return self.candidate.name
        head = "" if self.candidate.head == "fp32" else f" head={self.candidate.head}"
        return f"floor/{self.candidate.ranking}{head}"


@dataclass
class Chooser:
    """The base model, its rankings (by name) and the data the cuts are chosen on.

    ``frequencies``: (n,) id counts (codebook refits, budget-aware targets);
    ``size_metadata``: what the artifact adds to the table and head (the feature map);
    ``attribution``: for the budget-aware rankings (optional); ``pending``: rankings by name
    built on first use (a scorer's gradient pass is not paid for a budget refused up front).
    """

    model: nn.Module
    rankings: dict[str, Ranking]
    dataset: PreparedDataset | None = None
    frequencies: np.ndarray | None = None
    size_metadata: dict[str, Any] | None = None
    attribution: Any = None
    device: str | torch.device | None = None
    quiet: bool = True
    pending: dict[str, Callable[[], Ranking]] = field(default_factory=dict, repr=False)
    _planners: dict[tuple[str, str], TierPlanner] = field(default_factory=dict, repr=False)
    _val: SplitSource | None = field(default=None, repr=False)

    @cached_property
    def fingerprint(self) -> str:
        """The base model's fingerprint (hashed once for every cut of this chooser)."""
        return model_fingerprint(self.model)

    @property
    def total(self) -> int:
        n, d = self.model.embedding.weight.shape
        return int(n) * int(d)

    def ranking(self, name: str) -> Ranking:
        """The ranking ``name``, built now if it was pending."""
        if name not in self.rankings:
            self.rankings[name] = self.pending.pop(name)()
        return self.rankings[name]

    def planner(self, ranking: str) -> TierPlanner:
        rank = self.ranking(ranking)
        key = (ranking, rank.order)
        if key not in self._planners:
            self._planners[key] = TierPlanner(rank.scores.values, self.model.field_dims,
                                              rank.order)
        return self._planners[key]

    # -- fitting -------------------------------------------------------------------------
    def sizes(self, candidate: Candidate, tier_map: np.ndarray,
              calibrated: bool) -> tuple[int, int]:
        """(artifact bytes, table bytes) of ``candidate``'s plan ``tier_map``."""
        return plan_bytes(self.model, tier_map, candidate.family.tiers, head_dtype=candidate.head,
                          metadata=self.size_metadata, calibrated=calibrated)

    def fit(self, candidate: Candidate, budget: Budget, calibrated: bool) -> Fitted | None:
        """``candidate`` fitted to ``budget`` (None when it cannot serve it)."""
        planner = self.planner(candidate.ranking)
        family = candidate.family
        if not budget.is_bytes:
            if family.granularity != "entry":
                return None
            tmap = planner.tier_map(family, budget.kept_entries(self.total))
        else:
            limit = budget.byte_limit(self.total * 4)
            index = 0 if budget.kind == "bytes" else 1
            found = planner.fit(family, lambda t, _: self.sizes(candidate, t, calibrated)[index]
                                <= limit)
            if found is None:
                return None
            tmap = found[1]
        artifact, table = self.sizes(candidate, tmap, calibrated)
        return Fitted(candidate, tmap, int(np.count_nonzero(tmap)), artifact, table)

    def build(self, fitted: Fitted) -> nn.Module:
        """The model the artifact of ``fitted`` computes (before recalibration)."""
        rank = self.ranking(fitted.candidate.ranking)
        codebook = rank.codebook(self.model, fitted.tier_map, self.frequencies)
        return plan_copy(self.model, fitted.tier_map, fitted.candidate.family.tiers, codebook,
                         head_dtype=fitted.candidate.head)

    # -- choosing ------------------------------------------------------------------------
    def choose(self, budget: Budget, candidates: Sequence[Candidate]) -> tuple[nn.Module, dict]:
        """(the chosen cut's model, its record) for ``budget`` among ``candidates``.

        One candidate: its cut as it is (no validation, no recalibration). Several: each is
        scored on validation after its own recalibration and :func:`selection.choose` picks.
        """
        started = time.perf_counter()
        calibrate = len(candidates) > 1
        fitted = self._fit_all(budget, candidates, calibrate)
        if not calibrate:
            chosen, records, calibration = fitted[0], [], None
        else:
            chosen, records, calibration = self._select(budget, fitted)
        model = self.build(chosen)
        if calibration is not None:
            set_calibration(model, *calibration)
            calibration = calibration_of(model)  # the float32 pair the artifact stores
        record = self._record(budget, chosen, records, calibration)
        record["seconds_to_choose"] = time.perf_counter() - started
        return model.eval(), record

    def _fit_all(self, budget: Budget, candidates: Sequence[Candidate],
                 calibrated: bool) -> list[Fitted]:
        """Every candidate fitted to ``budget``; with several, a kept-entry budget also gets
        the floor of each (nothing kept: it keeps at most what the budget allows, and at
        extreme sparsity the head and first-order weights alone can beat any cut)."""
        out, seen = [], set()
        for candidate in candidates:
            got = self.fit(candidate, budget, calibrated)
            if got is None:
                continue
            fitted = [got]
            if calibrated and not budget.is_bytes and got.kept:
                empty = np.zeros_like(got.tier_map)
                fitted.append(Fitted(candidate, empty, 0,
                                     *self.sizes(candidate, empty, calibrated)))
            for item in fitted:
                # every ranking leaves the same plan when nothing is kept: one floor per
                # placeholder (and head)
                key = (self.ranking(candidate.ranking).placeholder, candidate.head) \
                    if item.kept == 0 else candidate
                if key not in seen:
                    seen.add(key)
                    out.append(item)
        if not out:
            raise BudgetError(self._refusal(budget, candidates, calibrated))
        return out

    def check(self, budget: Budget, candidates: Sequence[Candidate]) -> None:
        """Refuse ``budget`` before any work when none of ``candidates`` can serve it, with
        the message :meth:`choose` would give after fitting them all: a kept count beyond
        the table or only whole-row families for it, a byte budget below both ends of every
        candidate's plan (the first two sizes its binary search tries)."""
        if not budget.is_bytes:
            budget.kept_entries(self.total)
            if not any(c.family.granularity == "entry" for c in candidates):
                raise BudgetError(self._refusal(budget, candidates, False))
            return
        calibrated = len(candidates) > 1
        index = 0 if budget.kind == "bytes" else 1
        limit = budget.byte_limit(self.total * 4)
        if not any(size <= limit for size in self._end_sizes(candidates, calibrated, index)):
            raise BudgetError(self._refusal(budget, candidates, calibrated))

    def _end_sizes(self, candidates: Sequence[Candidate], calibrated: bool,
                   index: int) -> Iterator[int]:
        """Sizes (artifact: ``index`` 0, table: 1) of each candidate's plan with nothing and
        with everything kept (a family's tiers and shares); only a several-tier split of
        everything needs the ranking, so a refusal costs no scorer's pass."""
        shape = tuple(self.model.embedding.weight.shape)
        seen = set()
        for c in candidates:
            for everything in (False, True):
                split = everything and len(c.family.tiers) > 1
                key = (c.family, c.head, everything, c.ranking if split else None)
                if key in seen:
                    continue
                seen.add(key)
                if split:
                    planner = self.planner(c.ranking)
                    tmap = planner.tier_map(c.family, planner.units(c.family.granularity))
                else:
                    tmap = np.full(shape, int(everything), np.uint8)
                yield self.sizes(c, tmap, calibrated)[index]

    def _refusal(self, budget: Budget, candidates: Sequence[Candidate], calibrated: bool) -> str:
        if not budget.is_bytes:
            labels = ", ".join(sorted({c.family.label for c in candidates}))
            return (f"budget {budget.label} counts kept entries, and the plan families "
                    f"allowed ({labels}) keep whole rows; give a byte budget or an entry "
                    f"family")
        index = 0 if budget.kind == "bytes" else 1
        smallest = min(self._end_sizes(candidates, calibrated, index))
        what = "artifact" if budget.kind == "bytes" else "table"
        heads = sorted({c.head for c in candidates})
        return (f"budget {budget.label} is below the smallest {what} this model can have at "
                f"the allowed precisions ({smallest} bytes, head {'/'.join(heads)})")

    def _validation(self) -> SplitSource:
        if self._val is None:
            check_validation(self.dataset)
            self._val = SplitSource(self.dataset, "val", pick_device(self.device),
                                    in_memory=True)
        return self._val

    def recalibrate(self, model: nn.Module) -> tuple[float, float]:
        """Refit ``model``'s recalibration on validation (after fine-tuning changed it);
        returns :meth:`validate`'s measure of the recalibrated model, from the same pass."""
        clear_calibration(model)
        source = self._validation()
        logits, labels = source_logits(model.to(source.device), source, 1 << 14)
        set_calibration(model, *fit_logit_calibration(logits.double().numpy(), labels.numpy()))
        return _measure(calibrate(model, logits), labels)

    def validate(self, model: nn.Module) -> tuple[float, float]:
        """(AUC, LogLoss) of ``model`` (with its own calibration, if any) on validation: the
        measure a candidate is scored on."""
        source = self._validation()
        return _measure(*source_logits(model.to(source.device), source, 1 << 14))

    def _select(self, budget: Budget, fitted: list[Fitted]):
        source = self._validation()
        records, comps, losses, calibrations = [], [], [], []
        with progress_bar(total=len(fitted), disable=self.quiet, unit="cut",
                          desc=f"choosing {budget.label}") as bar:
            for item in fitted:
                self._score(item, source, records, comps, losses, calibrations)
                bar.update(1)
        size_key = None if budget.is_bytes else "kept"
        reference = next((r["name"] for r, f in zip(records, fitted)
                          if f.candidate.ranking == PAPER and f.candidate.family == FP32
                          and f.candidate.head == "fp32"), PAPER)
        index = choose(records, comps, losses, reference, size_key)
        return fitted[index], records, calibrations[index]

    def _score(self, item: Fitted, source: SplitSource, records: list, comps: list,
               losses: list, calibrations: list) -> None:
        """Validation record, DeLong components, per-row losses and recalibration of one
        fitted candidate."""
        logits, labels = source_logits(self.build(item).to(source.device), source, 1 << 14)
        z, y = logits.double().numpy(), labels.numpy()
        scale, bias = fit_logit_calibration(z, y)
        p = 1.0 / (1.0 + np.exp(-(scale * z + bias)))
        auc, ll = auc_logloss(y, p)
        losses.append(log_losses(z, y, scale, bias))
        comps.append(components(y, p))
        calibrations.append((scale, bias))
        records.append({"name": item.name, "kept": item.kept,
                        "bytes": item.artifact_bytes, "table_bytes": item.table_bytes,
                        "val_auc": auc, "val_logloss": ll})

    def _record(self, budget: Budget, chosen: Fitted, records: list[dict],
                calibration: tuple[float, float] | None) -> dict[str, Any]:
        cand = chosen.candidate
        rank = self.ranking(cand.ranking)
        out = {"budget": budget.to_json(), **rank.describe(), "candidate": chosen.name,
               "winner": chosen.name if records else None,
               "plan": cand.family.label, "tiers": [t.to_json() for t in cand.family.tiers],
               "head_dtype": cand.head, "kept": chosen.kept, "total": self.total,
               "artifact_bytes": chosen.artifact_bytes, "table_bytes": chosen.table_bytes}
        if calibration is not None:
            out["calibration"] = {"scale": float(calibration[0]), "bias": float(calibration[1])}
        if records:
            best = next(r for r in records if r["name"] == chosen.name)
            out["val_metrics"] = {"auc": best["val_auc"], "logloss": best["val_logloss"]}
            out["selection"] = {"rule": RULE, "candidates": records}
        return out


def with_budget_aware(chooser: Chooser, budget: Budget, names: list[str]) -> list[str]:
    """``names`` plus the budget-aware rankings of ``budget`` (registered in ``chooser``),
    when the attribution has bins: at the kept count of the paper's fp32 cut."""
    attr = chooser.attribution
    if attr is None or getattr(attr, "bins", None) is None or chooser.frequencies is None:
        return names
    paper = chooser.fit(Candidate(PAPER, FP32), budget, calibrated=True)
    if paper is None or paper.kept == 0:
        return names
    added, _ = budget_aware_rankings(attr, paper.kept, chooser.frequencies)
    for rank in added:
        chooser.rankings[rank.name] = rank
        chooser._planners.pop((rank.name, rank.order), None)
    return names + [r.name for r in added]


def _measure(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(AUC, LogLoss) of logits (as the model returns them) against 0/1 labels."""
    auc, ll = auc_logloss(labels.numpy(), torch.sigmoid(logits.double()).cpu().numpy())
    return float(auc), float(ll)


def check_validation(dataset: PreparedDataset | None) -> PreparedDataset:
    """The dataset, if it has a non-empty validation split; else :class:`ChooserError`."""
    hint = ("method 'auto' chooses each budget's cut on the validation split: give a "
            "prepared dataset with a non-empty 'val' split, or use method 'shaver' (the "
            "paper's ranking, no validation needed)")
    if dataset is None:
        raise ChooserError(f"no dataset given; {hint}")
    try:
        rows = dataset.num_rows("val")
    except (KeyError, ShaverError):
        rows = 0
    if rows <= 0:
        raise ChooserError(f"{dataset.path}: no validation rows; {hint}")
    return dataset
