"""Python API: prune a model to one or many budgets from one set of scores.

    >>> results = prune(model, attribution, [0.5, 0.95, "2MiB"], dataset=ds)
    >>> results[1].model          # embedding is a MaskedEmbedding, 95 % of entries replaced
    >>> results[1].info["winner"] # the candidate cut chosen on validation (method "auto")

With an Attribution the default method is ``auto`` (:mod:`shaver.pruning.auto`: the best of
several cuts on the validation split, per budget); ``method="shaver"`` is the paper's ranking
alone. Given scores (magnitude, ...) are pruned by their own ranking (``method="scores"``).
The scores are sorted once (:class:`~shaver.pruning.order.PruneOrder`); each budget is a cut
in that order. :class:`Pruner` keeps the sorted order to serve later budgets instantly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import FingerprintMismatch
from shaver.models.base import check_model_interface, copy_without_embedding
from shaver.pruning.budget import Budget, as_budgets, resolve_bytes
from shaver.pruning.codebook import check_codebook_mode, refit_codebook
from shaver.pruning.finetune import FinetuneConfig, finetune
from shaver.pruning.mask import MaskedEmbedding
from shaver.pruning.order import PruneOrder, ScoreError, check_scores
from shaver.pruning.scorers import Scores, data_frequencies, shapley_scores

log = logging.getLogger(__name__)

#: Splits whose id counts weight the refit codebook (the paper's attribution data; the
#: attribution itself defaults to train).
FREQUENCY_DATA = "train+val"
#: auto: best cut on validation; shaver: the paper's Shapley ranking; scores: given scores.
METHODS: tuple[str, ...] = ("auto", "shaver", "scores")


@dataclass
class PruneResult:
    """One budget's pruned model and its record.

    ``kept``/``total``: embedding entries kept / in the table; ``artifact_bytes``: exact size
    of the deployable artifact; ``seconds``: time to produce the pruned model from the sorted
    scores (budget resolution, mask, codebook, module; not evaluation or fine-tuning).
    """

    budget: Budget
    kept: int
    total: int
    artifact_bytes: int
    seconds: float
    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.info.get("metrics", {})

    def row(self) -> dict[str, Any]:
        """Flat record for results tables."""
        return {"budget": self.budget.label, "kept": self.kept, "total": self.total,
                "sparsity": 1 - self.kept / self.total if self.total else 0.0,
                "bytes": self.artifact_bytes, "auc": self.metrics.get("auc"),
                "logloss": self.metrics.get("logloss"), "seconds": self.seconds,
                "scorer": self.info.get("scorer"), "order": self.info.get("order"),
                "codebook": self.info.get("codebook"), "finetuned": self.info.get("finetuned"),
                "winner": self.info.get("winner")}


def _fingerprint(model: nn.Module) -> str:
    from shaver.train.checkpoint import model_fingerprint

    return model_fingerprint(model)


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
        found = _fingerprint(model)
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


def masked_copy(model: nn.Module, mask: np.ndarray, codebook: torch.Tensor) -> nn.Module:
    """A copy of ``model`` (eval mode) whose embedding is a MaskedEmbedding; the big table is
    not deep-copied (only its kept entries are copied into the new module)."""
    emb = model.embedding
    clone = copy_without_embedding(model)
    weight = emb.weight.detach()
    clone.embedding = MaskedEmbedding(weight, torch.from_numpy(mask).to(weight.device),
                                      codebook.to(weight.device), model.field_dims)
    return clone.eval()


class Pruner:
    """Scores sorted once; :meth:`cut` gives the pruned model for any budget.

    Args:
        model: the trained base model (not modified).
        scores: Attribution, Scores or (n, d) array (see :func:`as_scores`).
        order: "abs" or "signed". codebook: "fixed" or "refit" (needs ``frequencies``).
        value_dtype / head_dtype / size_metadata: passed to ``shaver.deploy.size`` for byte
        counts.
    """

    def __init__(self, model: nn.Module, scores: Any, *, order: str = "abs",
                 codebook: str = "fixed", dataset: PreparedDataset | None = None,
                 frequencies: np.ndarray | None = None, value_dtype: str = "fp32",
                 size_metadata: dict[str, Any] | None = None, head_dtype: str = "fp32"):
        check_model_interface(model)
        self.model = model
        self.codebook_mode = check_codebook_mode(codebook)
        self.scores = as_scores(model, scores, dataset=dataset)
        started = time.perf_counter()
        self.order = PruneOrder(self.scores.values, order)
        self.sort_seconds = time.perf_counter() - started
        self.total = self.order.total
        if codebook == "refit" and frequencies is None:
            if dataset is None:
                raise ScoreError("codebook='refit' needs id frequencies or a dataset")
            frequencies = data_frequencies(dataset, FREQUENCY_DATA)
        self.frequencies = frequencies
        self.value_dtype, self.size_metadata = value_dtype, size_metadata
        self.head_dtype = head_dtype

    def size_of(self, mask: np.ndarray) -> int:
        from shaver.deploy.size import predict_artifact_bytes

        return predict_artifact_bytes(self.model, mask, value_dtype=self.value_dtype,
                                      metadata=self.size_metadata, head_dtype=self.head_dtype)

    def resolve(self, budget: Budget) -> int:
        """Kept entries for ``budget`` (bytes: largest cut whose artifact fits)."""
        if budget.kind != "bytes":
            return budget.kept_entries(self.total)
        return resolve_bytes(budget, self.size_of, self.order.cursor().move, self.total)

    def cut(self, budget: Budget | float | int | str, kept: int | None = None) -> PruneResult:
        """The pruned model for one budget (no evaluation); ``kept``: already resolved."""
        budget = Budget.parse(budget)
        started = time.perf_counter()
        kept = self.resolve(budget) if kept is None else kept
        mask = self.order.mask(kept)
        codebook = self.scores.codebook
        if self.codebook_mode == "refit":
            codebook = refit_codebook(self.model.embedding.weight, mask, self.model.field_dims,
                                      self.frequencies, codebook)
        pruned = masked_copy(self.model, mask, codebook)
        seconds = time.perf_counter() - started
        placeholder = "codebook" if self.codebook_mode == "refit" else self.scores.placeholder
        info = {"budget": budget.to_json(), "scorer": self.scores.scorer,
                "order": self.order.order, "codebook": self.codebook_mode,
                "placeholder": placeholder, "kept": kept, "total": self.total,
                "finetuned": False, "metrics": {}, "seconds_to_prune": seconds,
                "seconds_to_sort": self.sort_seconds}
        return PruneResult(budget, kept, self.total, self.size_of(mask), seconds, pruned, info)


def prune(
    model: nn.Module,
    scores_or_attribution: Any,
    budgets: Budget | float | int | str | Iterable[Any],
    *,
    order: str | None = None,
    codebook: str | None = None,
    dataset: PreparedDataset | None = None,
    frequencies: np.ndarray | None = None,
    evaluate: bool | None = None,
    finetune_config: FinetuneConfig | None = None,
    value_dtype: str = "fp32",
    size_metadata: dict[str, Any] | None = None,
    include_feature_map: bool = True,
    device: str | torch.device | None = None,
    quiet: bool = True,
    method: str | None = None,
) -> list[PruneResult]:
    """Prune ``model`` to every budget in ``budgets`` (one sort of the scores serves all).

    ``method`` (default: "auto" for an Attribution given without ``order`` / ``codebook``,
    "shaver" for one given with them, else "scores"): "auto" evaluates the candidate cuts of
    :mod:`shaver.pruning.auto` on ``dataset``'s validation split at each budget and keeps the
    best (``info["winner"]``); "shaver" is the paper's ranking of the attribution's phi with
    ``order`` / ``codebook`` (default "abs" / "fixed": |phi|, fixed codebook); "scores" prunes
    by the given scores with them.

    budgets: Budget objects or values read by :meth:`Budget.parse` (0.95 sparsity, 1000 kept
    entries, "2MiB"); all are validated before any work. ``evaluate`` (default: when a
    dataset is given) adds test ``{"auc", "logloss"}``; ``finetune_config`` fine-tunes each
    pruned model (mask fixed) on ``dataset`` before that evaluation. Byte counts are those of
    ``shaver.deploy.artifact.export_artifact`` on the saved pruned directory: with a dataset
    and ``include_feature_map``, its feature map (vocabularies) is counted, as export adds it.
    Returns one :class:`PruneResult` per budget, in the given order.
    """
    budgets = as_budgets(budgets)
    if size_metadata is None and dataset is not None and include_feature_map:
        size_metadata = _feature_map_metadata(dataset)
    if finetune_config is not None and dataset is None:
        raise ScoreError("fine-tuning needs a dataset")
    method = resolve_method(method, scores_or_attribution,
                            explicit=order is not None or codebook is not None)
    order, codebook = order or "abs", codebook or "fixed"
    if method == "auto":
        from shaver.pruning.auto import prune_auto

        cuts = prune_auto(model, scores_or_attribution, budgets, dataset=dataset,
                          frequencies=frequencies, value_dtype=value_dtype,
                          size_metadata=size_metadata, device=device, quiet=quiet)
    else:
        pruner = Pruner(model, scores_or_attribution, order=order, codebook=codebook,
                        dataset=dataset, frequencies=frequencies, value_dtype=value_dtype,
                        size_metadata=size_metadata)
        kept_counts = [pruner.resolve(b) for b in budgets]  # every budget checked first
        cuts = [pruner.cut(b, kept) for b, kept in zip(budgets, kept_counts)]
    evaluate = dataset is not None if evaluate is None else evaluate
    base_fp = _fingerprint(model)
    results = []
    for result in cuts:
        result.info["method"] = method
        result.info["model_fingerprint"] = base_fp
        if dataset is not None:
            result.info["dataset"] = {"path": str(dataset.path),
                                      "fingerprint": dataset.fingerprint}
        if finetune_config is not None:
            record = finetune(result.model, dataset, finetune_config, device=device,
                              quiet=quiet)
            result.info.update(finetuned=True, finetune=finetune_config.to_json(),
                               finetune_best_epoch=record["best_epoch"])
        if evaluate:
            result.info["metrics"] = _test_metrics(result.model, dataset, device)
        log.debug("%s: kept %d/%d, %d bytes, auc %s (%.3f s)", result.budget.label, result.kept,
                 result.total, result.artifact_bytes, result.metrics.get("auc"), result.seconds)
        results.append(result)
    return results


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


def _feature_map_metadata(dataset: PreparedDataset) -> dict[str, Any] | None:
    from shaver.deploy.artifact import feature_map_of
    from shaver.deploy.size import encode_feature_map

    feature_map = feature_map_of(str(dataset.path))
    return None if feature_map is None else {"feature_map": encode_feature_map(feature_map)}


def _test_metrics(model: nn.Module, dataset: PreparedDataset | None,
                  device: str | torch.device | None) -> dict[str, float]:
    from shaver.train.loop import evaluate

    if dataset is None:
        raise ScoreError("evaluate=True needs a dataset")
    metrics = evaluate(model, dataset, "test", device=device)
    return {"auc": float(metrics["auc"]), "logloss": float(metrics["logloss"])}
