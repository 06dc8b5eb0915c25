"""What decides: importance scores of every embedding entry, under one interface.

Every scorer returns :class:`Scores`: ``values`` float32 (n, d) where larger = more useful
(the Shapley sign convention: phi > 0 means replacing the entry raises the loss), plus the
placeholder the pruned entries take (codebook or zero). What is masked is decided later by a
:class:`~shaver.table.order.PruneOrder` cut.

* ``shapley``: phi of an :class:`~shaver.attribution.result.Attribution` (its placeholder
  and codebook).
* ``magnitude``: ``|w - c|``: distance of the entry to its placeholder (``|w|`` for zero).
* ``random``: uniform scores from a seeded generator.
* ``taylor``: first-order estimate of the loss change when the entry takes its placeholder,
  ``g * (c - w)`` with ``g = dL/dw`` of the mean log loss over the attribution data, model in
  eval mode; order ``abs`` ranks by ``|w * dL/dw|`` (zero placeholder).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shaver.attribution.codebook import field_codebook
from shaver.data.store import PreparedDataset
from shaver.progress import progress_bar
from shaver.table.order import ScoreError, check_scores
from shaver.train.device import pick_device

log = logging.getLogger(__name__)

SCORERS: tuple[str, ...] = ("shapley", "magnitude", "random", "taylor")
PLACEHOLDERS: tuple[str, ...] = ("codebook", "zero")


@dataclass
class Scores:
    """values float32 (n, d) (larger = more useful); codebook float32 (m, d) placeholders."""

    values: np.ndarray
    scorer: str
    placeholder: str
    codebook: torch.Tensor
    model_fingerprint: str | None = None
    dataset_fingerprint: str | None = None

    def __post_init__(self) -> None:
        self.values = check_scores(np.asarray(self.values, dtype=np.float32),
                                   source=f"{self.scorer} scores")
        if self.placeholder not in PLACEHOLDERS:
            raise ScoreError(f"placeholder must be one of {PLACEHOLDERS}, got "
                             f"{self.placeholder!r}")
        self.codebook = torch.as_tensor(self.codebook, dtype=torch.float32).cpu()
        if self.codebook.dim() != 2 or self.codebook.shape[1] != self.values.shape[1]:
            raise ScoreError(f"codebook shape {tuple(self.codebook.shape)} does not fit scores "
                             f"of shape {self.values.shape}")


def check_scorer(name: str) -> str:
    if name not in SCORERS:
        raise ScoreError(f"unknown scorer {name!r}: expected one of {', '.join(SCORERS)}")
    return name


def data_frequencies(dataset: PreparedDataset, data: str = "train+val",
                     batch_size: int = 1 << 16) -> np.ndarray:
    """int64 (num_features,): occurrences of each global id over the splits ``data``."""
    counts = np.zeros(dataset.num_features, dtype=np.int64)
    for batch in dataset.batches(data, batch_size):
        ids = batch.x[batch.x >= 0]  # every value of a bag counts; its pads do not
        counts += np.bincount(ids, minlength=dataset.num_features)
    return counts


def placeholder_codebook(model: nn.Module, placeholder: str,
                         frequencies: np.ndarray | None) -> torch.Tensor:
    """float32 (m, d): the field codebook (needs ``frequencies``) or zeros."""
    weight = model.embedding.weight.detach().cpu()
    m, d = len(model.field_dims), int(weight.shape[1])
    if placeholder == "zero":
        return torch.zeros(m, d)
    if placeholder != "codebook":
        raise ScoreError(f"placeholder must be one of {PLACEHOLDERS}, got {placeholder!r}")
    if frequencies is None:
        raise ScoreError("placeholder 'codebook' needs id frequencies (pass a dataset)")
    return field_codebook(weight, model.field_dims, frequencies)


def shapley_scores(attribution) -> Scores:
    """Scores from an Attribution (phi, its placeholder and codebook)."""
    return Scores(values=attribution.phi.numpy(), scorer="shapley",
                  placeholder=attribution.placeholder, codebook=attribution.codebook,
                  model_fingerprint=attribution.model_fingerprint or None,
                  dataset_fingerprint=attribution.dataset_fingerprint or None)


def _row_placeholder(model: nn.Module, codebook: torch.Tensor) -> torch.Tensor:
    dims = torch.as_tensor(model.field_dims)
    return codebook[torch.repeat_interleave(torch.arange(len(dims)), dims)]


def magnitude_scores(model: nn.Module, codebook: torch.Tensor, placeholder: str) -> Scores:
    """``|w - c[field]|`` (n, d); ``|w|`` with the zero placeholder."""
    weight = model.embedding.weight.detach().cpu().float()
    values = (weight - _row_placeholder(model, codebook)).abs()
    return Scores(values.numpy(), "magnitude", placeholder, codebook)


def random_scores(model: nn.Module, codebook: torch.Tensor, placeholder: str,
                  seed: int = 0) -> Scores:
    """Uniform [0, 1) scores (n, d) from ``np.random.default_rng(seed)``."""
    shape = tuple(model.embedding.weight.shape)
    values = np.random.default_rng(seed).random(shape, dtype=np.float32)
    return Scores(values, "random", placeholder, codebook)


def taylor_scores(model: nn.Module, dataset: PreparedDataset, codebook: torch.Tensor,
                  placeholder: str, *, data: str = "train+val", batch_size: int = 4096,
                  device: torch.device | str | None = None, quiet: bool = True) -> Scores:
    """``g * (c - w)`` (n, d) with ``g`` the gradient of the mean log loss over ``data``.

    The model runs in eval mode (as in the attribution game) on ``device`` and is moved back
    afterwards; only the embedding lookups carry gradients, so the head's parameters are
    untouched.
    """
    dev = pick_device(device)
    was_training, home = model.training, model.embedding.weight.device
    model.to(dev).eval()
    weight = model.embedding.weight.detach()
    grad = torch.zeros(weight.shape, dtype=torch.float64, device=dev)
    rows = 0
    total = dataset.num_rows(data)
    with progress_bar(total=total, disable=quiet, desc="taylor", unit="row") as bar:
        for batch in dataset.batches(data, batch_size):
            x = torch.from_numpy(batch.x).to(dev)
            y = torch.from_numpy(batch.y).to(dev)
            w = None if batch.w is None else torch.from_numpy(batch.w).to(dev)
            emb = model.embed(x).detach().requires_grad_(True)  # slot level (bag pads: 0)
            logits = model.head(emb, x) if w is None else model.head(emb, x, w)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum")
            (g_emb,) = torch.autograd.grad(loss, emb)
            real = x.reshape(-1) >= 0  # a pad's slot is no row of the table
            grad.index_add_(0, x.reshape(-1)[real],
                            g_emb.reshape(-1, weight.shape[1])[real].double())
            rows += len(y)
            bar.update(len(y))
    model.to(home).train(was_training)
    if rows == 0:
        raise ScoreError(f"{dataset.path}: split {data!r} has no rows to score on")
    grad = (grad / rows).cpu()
    delta = _row_placeholder(model, codebook).double() - weight.cpu().double()
    values = (grad * delta).float().numpy()
    return Scores(values, "taylor", placeholder, codebook, dataset_fingerprint=dataset.fingerprint)


def compute_scores(
    scorer: str,
    model: nn.Module,
    *,
    attribution=None,
    dataset: PreparedDataset | None = None,
    placeholder: str | None = None,
    frequencies: np.ndarray | None = None,
    data: str = "train+val",
    seed: int = 0,
    batch_size: int = 4096,
    device: torch.device | str | None = None,
    quiet: bool = True,
) -> Scores:
    """Scores of ``scorer`` (one of :data:`SCORERS`) for ``model``'s embedding entries.

    ``shapley`` needs ``attribution``; ``taylor`` needs ``dataset``. For the other scorers the
    placeholder defaults to the attribution's when one is given, else ``"zero"``; the codebook
    placeholder reuses the attribution's codebook, or is computed from ``frequencies`` (or
    from the counts of ``dataset``'s ``data`` splits).
    """
    check_scorer(scorer)
    if scorer == "shapley":
        if attribution is None:
            raise ScoreError("scorer 'shapley' needs an attribution (shaver attribute)")
        if placeholder not in (None, attribution.placeholder):
            raise ScoreError(f"the attribution was computed with placeholder "
                             f"{attribution.placeholder!r}, not {placeholder!r}")
        return shapley_scores(attribution)
    placeholder = placeholder or "zero"
    if placeholder == "codebook" and attribution is not None \
            and attribution.placeholder == "codebook":
        codebook = attribution.codebook
    else:
        if placeholder == "codebook" and frequencies is None and dataset is not None:
            frequencies = data_frequencies(dataset, data)
        codebook = placeholder_codebook(model, placeholder, frequencies)
    if scorer == "magnitude":
        return magnitude_scores(model, codebook, placeholder)
    if scorer == "random":
        return random_scores(model, codebook, placeholder, seed)
    if dataset is None:
        raise ScoreError("scorer 'taylor' needs a dataset to accumulate gradients on")
    return taylor_scores(model, dataset, codebook, placeholder, data=data,
                         batch_size=batch_size, device=device, quiet=quiet)

