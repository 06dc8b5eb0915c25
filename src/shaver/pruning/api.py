"""Python API: prune a model to one or many budgets, through THE chooser.

    >>> results = prune(model, attribution, [0.5, 0.95, "2MiB", "1/16"], dataset=ds)
    >>> results[1].model          # its embedding a plan module (kept tiers + codebook)
    >>> results[1].info["winner"] # the candidate chosen on validation (method "auto")

With an Attribution the default method is ``auto``: :mod:`shaver.pruning.chooser` picks, per
budget, the best of rankings x plan families x head precisions on the validation split,
each recalibrated. ``method="shaver"`` is the paper's cut alone (|phi|, the attribution's
codebook, fp32 values, no validation); given scores (magnitude, ...) are cut by their own
ranking (``method="scores"``). Every door (``shaver prune``, ``shaver fleet``, ``shaver
bench``) calls :func:`prune`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import FingerprintMismatch
from shaver.models.base import calibration_of, check_model_interface
from shaver.pruning.candidates import candidates_for
from shaver.pruning.chooser import Chooser, check_validation, with_budget_aware
from shaver.pruning.codebook import check_codebook_mode
from shaver.pruning.finetune import FinetuneConfig, finetune
from shaver.pruning.rankings import PAPER, Ranking, attribution_rankings, single_shot_rankings
from shaver.pruning.scorers import Scores, data_frequencies, shapley_scores
from shaver.table.budget import Budget, as_budgets
from shaver.table.families import Shape
from shaver.table.order import ScoreError, check_scores
from shaver.table.size import feature_map_metadata
from shaver.train.checkpoint import model_fingerprint
from shaver.train.evaluation import evaluate as evaluate_split

log = logging.getLogger(__name__)

#: Splits whose id counts weight the refit codebook and the budget-aware targets: every
#: labelled row the model was fitted or selected on.
FREQUENCY_DATA = "train+val"
#: auto: best cut on validation; shaver: the paper's Shapley ranking; scores: given scores.
METHODS: tuple[str, ...] = ("auto", "shaver", "scores")


@dataclass
class PruneResult:
    """One budget's pruned model and its record.

    ``kept``/``total``: embedding entries kept / in the table (the paper's count);
    ``artifact_bytes`` / ``table_bytes``: exact sizes of the deployable artifact and of its
    embedding table (:func:`shaver.table.size.plan_bytes`); ``seconds``: time to choose and
    build the cut (fitting, validation of the candidates; not test evaluation or
    fine-tuning); ``info``: the record stored in pruned.json and the artifact.
    """

    budget: Budget
    kept: int
    total: int
    artifact_bytes: int
    table_bytes: int
    seconds: float
    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.info.get("metrics", {})

    def row(self) -> dict[str, Any]:
        """THE results row of a cut (``shaver prune``, fleets and the benchmark use it)."""
        return {"budget": self.budget.label, "kept": self.kept, "total": self.total,
                "sparsity": 1 - self.kept / self.total if self.total else 0.0,
                "artifact_bytes": self.artifact_bytes, "table_bytes": self.table_bytes,
                "auc": self.metrics.get("auc"), "logloss": self.metrics.get("logloss"),
                "seconds": self.seconds, "method": self.info.get("method"),
                "winner": self.info.get("winner"), "plan": self.info.get("plan"),
                "head_dtype": self.info.get("head_dtype"), "scorer": self.info.get("scorer"),
                "placeholder": self.info.get("placeholder"), "order": self.info.get("order"),
                "codebook": self.info.get("codebook"), "finetuned": self.info.get("finetuned"),
                "finetune_epochs": self.info.get("finetune_epochs"),
                "finetune_best_epoch": self.info.get("finetune_best_epoch"),
                "calibrated": "calibration" in self.info}


def as_scores(model: nn.Module, scores: Any, *, dataset: PreparedDataset | None = None,
              placeholder: str = "zero") -> Scores:
    """Attribution | Scores | array (n, d) -> :class:`Scores`, checked against the model
    (shape, model fingerprint) and the dataset (fingerprint) when they record them."""
    if isinstance(scores, Scores):
        result = scores
    elif hasattr(scores, "phi") and hasattr(scores, "codebook"):
        result = shapley_scores(scores)
    else:
        values = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else scores
        m, d = len(model.field_dims), int(model.embedding.weight.shape[1])
        if placeholder != "zero":
            raise ScoreError("raw score arrays take the zero placeholder; wrap them in "
                             "shaver.pruning.scorers.Scores to give a codebook")
        result = Scores(np.asarray(values, dtype=np.float32), "custom", "zero",
                        torch.zeros(m, d))
    shape = tuple(model.embedding.weight.shape)
    check_scores(result.values, shape, source=f"{result.scorer} scores")
    if result.codebook.shape[0] != len(model.field_dims):
        raise ScoreError(f"codebook has {result.codebook.shape[0]} fields, the model has "
                         f"{len(model.field_dims)}")
    if result.model_fingerprint:
        found = model_fingerprint(model)
        if result.model_fingerprint != found:
            raise FingerprintMismatch(
                f"the {result.scorer} scores were computed for model "
                f"{result.model_fingerprint}, but this model's fingerprint is {found} "
                f"(another run?)")
    if dataset is not None and result.dataset_fingerprint \
            and result.dataset_fingerprint != dataset.fingerprint:
        raise FingerprintMismatch(
            f"the {result.scorer} scores were computed on dataset "
            f"{result.dataset_fingerprint}, but {dataset.path} has fingerprint "
            f"{dataset.fingerprint}")
    return result


def prune(
    model: nn.Module,
    scores_or_attribution: Any,
    budgets: Budget | float | int | str | Iterable[Any],
    *,
    method: str | None = None,
    dataset: PreparedDataset | None = None,
    values: Sequence[str] | None = None,
    heads: Sequence[str] | None = None,
    families: Sequence[Shape] | None = None,
    order: str | None = None,
    codebook: str | None = None,
    frequencies: np.ndarray | None = None,
    evaluate: bool | None = None,
    finetune_config: FinetuneConfig | None = None,
    include_feature_map: bool = True,
    device: str | torch.device | None = None,
    quiet: bool = True,
) -> list[PruneResult]:
    """Prune ``model`` to every budget in ``budgets`` (read by :meth:`Budget.parse`: 0.95
    sparsity, 1000 kept entries, "2MiB" artifact bytes, "1/16" of the fp32 table; all are
    validated before any work).

    ``method`` (default: "auto" for an Attribution given without ``order`` / ``codebook``,
    "shaver" for one given with them, else "scores"): "auto" chooses each budget's cut on
    ``dataset``'s validation split among rankings x plan families x head precisions
    (:mod:`shaver.pruning.chooser`), restricted to the value dtypes ``values``, the head
    dtypes ``heads`` or the plan ``families`` when given; "shaver" is the paper's ranking
    of the attribution's phi with ``order`` / ``codebook`` (default "abs" / "fixed"), and
    "scores" the given scores' ranking, each as one fixed candidate (fp32 values and head
    unless ``values`` / ``heads`` / ``families`` name one).

    ``evaluate`` (default: when a dataset is given) adds test ``{"auc", "logloss"}``;
    ``finetune_config`` fine-tunes each chosen plan on ``dataset`` before that evaluation
    (any plan, quantisation-aware: tier map and mask fixed, kept values and head trained
    through their stored grid, re-quantised as the artifact stores them, the plan as chosen
    kept when no epoch beats its validation AUC; :mod:`shaver.pruning.finetune`). Byte
    counts are those of the artifact ``shaver export`` writes (with the dataset's feature
    map when ``include_feature_map``). Returns one
    :class:`PruneResult` per budget, in the given order.
    """
    budgets = as_budgets(budgets)
    if finetune_config is not None and dataset is None:
        raise ScoreError("fine-tuning needs a dataset")
    method = resolve_method(method, scores_or_attribution,
                            explicit=order is not None or codebook is not None)
    chooser, names = open_chooser(model, scores_or_attribution, method, dataset=dataset,
                                  order=order or "abs", codebook=codebook or "fixed",
                                  frequencies=frequencies,
                                  include_feature_map=include_feature_map, device=device,
                                  quiet=quiet)
    for budget in budgets:  # every budget checked before any work
        candidates = candidates_for(budget, names, values=values, heads=heads,
                                    families=families)
        chooser.check(budget, candidates if method == "auto" else candidates[:1])
    evaluate = dataset is not None if evaluate is None else evaluate
    return [cut(chooser, names, budget, method, values=values, heads=heads, families=families,
                evaluate=evaluate, finetune_config=finetune_config) for budget in budgets]


def cut(chooser: Chooser, names: list[str], budget: Budget, method: str, *,
        values: Sequence[str] | None = None, heads: Sequence[str] | None = None,
        families: Sequence[Shape] | None = None, evaluate: bool = True,
        finetune_config: FinetuneConfig | None = None) -> PruneResult:
    """One budget's cut from an :func:`open_chooser` (what :func:`prune` does per budget;
    a fleet calls it per device class with the class's precisions)."""
    started = time.perf_counter()
    ranked = with_budget_aware(chooser, budget, names) if method == "auto" else names
    candidates = candidates_for(budget, ranked, values=values, heads=heads, families=families)
    if method != "auto":
        candidates = candidates[:1]
    pruned, record = chooser.choose(budget, candidates)
    seconds = time.perf_counter() - started
    dataset = chooser.dataset
    info = {**record, "method": method, "model_fingerprint": chooser.fingerprint,
            "finetuned": False, "metrics": {}}
    if dataset is not None:
        info["dataset"] = {"path": str(dataset.path), "fingerprint": dataset.fingerprint}
    if evaluate and finetune_config is None:
        info["metrics"] = _test_metrics(pruned, dataset, chooser.device)
    result = PruneResult(budget, record["kept"], record["total"], record["artifact_bytes"],
                         record["table_bytes"], seconds, pruned, info)
    if finetune_config is not None:
        result = finetune_cut(chooser, result, finetune_config, evaluate=evaluate)
    log.debug("%s: %s kept %d/%d, %d bytes, auc %s (%.3f s)", budget.label, record["candidate"],
              result.kept, result.total, result.artifact_bytes, result.metrics.get("auc"),
              seconds)
    return result


def finetune_cut(chooser: Chooser, result: PruneResult, config: FinetuneConfig, *,
                 evaluate: bool = True) -> PruneResult:
    """The cut ``result`` of ``chooser`` fine-tuned on the chooser's dataset (what
    ``prune(..., finetune_config=config)`` does after choosing): a new :class:`PruneResult`
    of the same plan and bytes, its model the fine-tuned plan, or the plan as chosen when
    no epoch beats it on validation; ``result`` is left as it is."""
    if chooser.dataset is None:
        raise ScoreError("fine-tuning needs a dataset")
    info = {**result.info, "metrics": {}}
    model = _finetune(chooser, result.model, info, config)
    if evaluate:
        info["metrics"] = _test_metrics(model, chooser.dataset, chooser.device)
    return PruneResult(result.budget, result.kept, result.total, result.artifact_bytes,
                       result.table_bytes, result.seconds, model, info)


def open_chooser(model: nn.Module, scores: Any, method: str, *,
                 dataset: PreparedDataset | None, order: str = "abs", codebook: str = "fixed",
                 frequencies: np.ndarray | None = None, include_feature_map: bool = True,
                 device: Any = None, quiet: bool = True) -> tuple[Chooser, list[str]]:
    """The chooser of ``method`` ("auto", "shaver", "scores": see :func:`prune`) and its
    ranking names (the paper's, or the given scores', first); built once, it serves every
    budget (its rankings are sorted once)."""
    check_model_interface(model)
    check_codebook_mode(codebook)
    scored = as_scores(model, scores, dataset=dataset)
    if method == "auto":
        check_validation(dataset)
    needs_counts = method == "auto" or codebook == "refit"
    if frequencies is None and needs_counts:
        if dataset is None:
            raise ScoreError(f"method {method!r} with codebook {codebook!r} needs id "
                             f"frequencies or a dataset")
        frequencies = data_frequencies(dataset, FREQUENCY_DATA)
    meta = feature_map_metadata(dataset) if include_feature_map else None
    attribution = scores if method in ("auto", "shaver") else None
    if method == "auto":
        if saw_validation(attribution):
            log.warning("auto: the attribution was computed on data including the validation "
                        "split, so its Shapley candidates are favoured in the selection; "
                        "attribute with data='train' (--data train) for an unbiased choice")
        data = str(attribution.settings.get("data", "train")).split(":")[0]
        rankings = attribution_rankings(attribution)
        pending = single_shot_rankings(model, dataset, data, device=device, quiet=quiet)
    else:
        name = PAPER if method == "shaver" else scored.scorer
        rankings, pending = [Ranking(name, scored, order, refit=codebook == "refit")], {}
    chooser = Chooser(model, {r.name: r for r in rankings}, dataset, frequencies, meta,
                      attribution, device, quiet, pending)
    return chooser, [r.name for r in rankings] + list(pending)


def _finetune(chooser: Chooser, pruned: nn.Module, info: dict[str, Any],
              config: FinetuneConfig) -> nn.Module:
    """The plan ``pruned`` fine-tuned on its stored grid (:mod:`shaver.pruning.finetune`),
    recalibrated when the plan was, if it beats ``pruned``'s validation AUC (the chooser's
    measure, each model with its own calibration); else ``pruned`` itself (best epoch 0)."""
    tuned, record = finetune(pruned, chooser.dataset, config, head_dtype=info["head_dtype"],
                             device=chooser.device, quiet=chooser.quiet)
    # the model changed: its recalibration is refitted (and measured in the same pass)
    after = chooser.recalibrate(tuned) if "calibration" in info else chooser.validate(tuned)
    before = chooser.validate(pruned)
    improved = after[0] > before[0]
    if improved and "calibration" in info:
        scale, bias = calibration_of(tuned)
        info["calibration"] = {"scale": scale, "bias": bias}
    if not improved:
        log.info("fine-tuning did not beat the plan's validation AUC (%.5f >= %.5f): the plan "
                 "is kept as chosen", before[0], after[0])
    info.update(finetuned=True, finetune=config.to_json(),
                finetune_epochs=record["epochs_run"], finetune_seconds=record["seconds"],
                finetune_best_epoch=record["best_epoch"] if improved else 0,
                finetune_val={"before": {"auc": before[0], "logloss": before[1]},
                              "after": {"auc": after[0], "logloss": after[1]}})
    return tuned if improved else pruned


def saw_validation(attribution: Any) -> bool:
    """Whether the attribution's data included the validation split."""
    data = str(getattr(attribution, "settings", {}).get("data", "train"))
    return "val" in data.split(":")[0].split("+")


def resolve_method(method: str | None, scores: Any, explicit: bool = False) -> str:
    """The pruning method for ``scores``: None -> "auto" for an Attribution ("shaver" when
    ``explicit``: an order or codebook mode was asked for), else "scores"."""
    is_attribution = hasattr(scores, "phi") and hasattr(scores, "codebook")
    if method is None:
        return ("shaver" if explicit else "auto") if is_attribution else "scores"
    if method == "auto" and explicit:
        raise ScoreError("method 'auto' chooses the order and codebook of each cut itself; "
                         "drop order=/codebook= or use method='shaver'")
    if method not in METHODS:
        raise ScoreError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    if method in ("auto", "shaver") and not is_attribution:
        raise ScoreError(f"method {method!r} needs an Attribution (shaver attribute), not "
                         f"{type(scores).__name__} scores; use method='scores'")
    return method


def _test_metrics(model: nn.Module, dataset: PreparedDataset | None,
                  device: str | torch.device | None) -> dict[str, float]:
    if dataset is None:
        raise ScoreError("evaluate=True needs a dataset")
    metrics = evaluate_split(model, dataset, "test", device=device)
    return {"auc": float(metrics["auc"]), "logloss": float(metrics["logloss"])}
