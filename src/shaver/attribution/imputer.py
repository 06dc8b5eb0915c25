"""The placeholder imputer: what the model predicts when only the entries in S are kept.

As in SAGE (iancovert/sage ``imputers.py``), the question "what does the model predict with
only the players in S?" lives here, and the estimators only ask it. Players of one sample are
the embedding entries it looks up, one per slot and column, numbered
``j = slot * d + column`` (:mod:`shaver.layout`: a single-valued field is one slot, so
without bags this is ``field * d + column`` over the m*d active entries); an entry outside S
takes its field's placeholder value (the codebook row C[f, k], or 0 for the zero variant).

The game with multi-valued fields (bags; a docs note to METHOD.md section 2)
---------------------------------------------------------------------------
Players stay embedding entries: every entry of every id in a bag is one player, and a walk
removes them one at a time. The pooled vector of a bag field f is ``sum_s coef[s] * E[x[s]]``
over its slots. A removed entry (s, k) takes the field's placeholder C[f, k] INSIDE the bag
and KEEPS ITS SHARE of the pooling: its coefficient is unchanged, so the pooled position
(f, k) moves by ``coef[s] * (C[f, k] - E[x[s], k])``. This is exactly what the pruned model
computes at deployment: a pruned entry is replaced by its codebook value in the table, and
the pooling (mean or sum) does not know that it was pruned; so the value of a coalition is
the deployed model's loss with that coalition kept. The alternative, a removed id leaving the
bag (and a mean's denominator), would be a game no deployed table plays: pruning never
removes an id from a bag, only replaces its values.

Two more rules make the players the entries of the TABLE, not of the slots:

* an id repeated in one bag is ONE entry (:mod:`shaver.attribution.slots`): the first slot
  holding the id is the player, with the sum of the copies' coefficients (the pooled vector
  is unchanged); the later copies are no players of their own and take the placeholder
  whenever the first one does. A duplicated id is one player, not two;
* pads and slots of coefficient 0 (a weight-0 value of a sum bag) are null players: removing
  them changes nothing, their exact credit is 0 and no entry is credited for them
  (:func:`shaver.attribution.estimator.common.global_entries` marks a pad -1; a walk visits
  the real players first, :func:`shaver.attribution.permutations.real_first`, and stops
  after them).
"""

from __future__ import annotations

import torch
from torch import nn

from shaver.attribution.slots import merge_coefficients, tie


class PlaceholderImputer:
    """Replace dropped entries of the slot-level embedding block by their field's placeholder.

    model: a shaver model (``embed``, ``head``, ``layout``); placeholder: (m, d) float tensor
    (one row per FIELD; a bag's slots share their field's row).
    """

    def __init__(self, model: nn.Module, placeholder: torch.Tensor):
        self.model = model
        weight = model.embedding.weight
        self.placeholder = placeholder.to(weight.device, torch.float32)
        self.num_fields = int(self.placeholder.shape[0])
        self.embed_dim = int(self.placeholder.shape[1])
        layout = getattr(model, "layout", None)
        self.has_bags = bool(layout is not None and layout.has_bags)
        self.num_slots = int(layout.num_slots) if layout is not None else self.num_fields
        if self.has_bags:
            self.slot_field = torch.from_numpy(layout.slot_field).to(weight.device)
            self.bag_ranges = [(int(layout.starts[b.field]), int(layout.starts[b.field + 1]))
                               for b in layout.bags]
        else:
            self.slot_field = torch.arange(self.num_fields, device=weight.device)
            self.bag_ranges = []

    @property
    def num_players(self) -> int:
        """slots * d: the player positions of one sample (m*d without bags); pads and
        zero-coefficient slots among them are null players."""
        return self.num_slots * self.embed_dim

    def coefficients(self, x: torch.Tensor, w: torch.Tensor | None = None
                     ) -> torch.Tensor | None:
        """float32 (B, slots): the players' pooling coefficients (a repeated id's copies
        summed into its first slot, :func:`~shaver.attribution.slots.merge_coefficients`),
        or None without bags."""
        if not self.has_bags:
            return None
        return merge_coefficients(self.model.coefficients(x, w), x)

    def real_players(self, x: torch.Tensor, w: torch.Tensor | None = None
                     ) -> torch.Tensor | None:
        """bool (B, slots*d): the players that can change the loss (coefficient != 0: not a
        pad, not a repeated id's later copy, not a weight-0 value), or None without bags
        (every player is real)."""
        coef = self.coefficients(x, w)
        if coef is None:
            return None
        return (coef != 0).repeat_interleave(self.embed_dim, dim=1)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, w: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x: LongTensor (batch, slots), w: weights or None -> (emb, base, coef):
        ``emb`` float32 (batch, slots, d) the model's slot embeddings (0 in pads), ``base``
        the placeholder of each slot's field, ``coef`` the players' pooling coefficients
        (:meth:`coefficients`; None without bags)."""
        model = self.model
        emb = (model.embed(x) if self.has_bags else model.embedding(x)).to(torch.float32)
        base = self.placeholder[self.slot_field].unsqueeze(0).expand(x.shape[0], -1, -1)
        return emb, base, self.coefficients(x, w)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, keep: torch.Tensor,
                 w: torch.Tensor | None = None) -> torch.Tensor:
        """x: LongTensor (batch, slots); keep: bool (batch, slots*d), True = entry kept; w:
        bag weights or None -> logits (batch,)."""
        emb, base, _ = self.embed(x, w)
        if self.has_bags:
            keep = tie(keep.reshape(x.shape[0], -1), x)  # copies go with their first slot
        mixed = torch.where(keep.view_as(emb), emb, base)
        return call_head(self.model, mixed, x, w).reshape(-1).float()


def call_head(model: nn.Module, emb: torch.Tensor, x: torch.Tensor,
              w: torch.Tensor | None) -> torch.Tensor:
    """``model.head(emb, x, w)``; ``head(emb, x)`` when ``w`` is None (a model of the older
    two-argument interface, without bags, still plays)."""
    return model.head(emb, x) if w is None else model.head(emb, x, w)
