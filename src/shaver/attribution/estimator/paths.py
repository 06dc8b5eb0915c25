"""Ways to evaluate every state of a walk: the generic path and model-specific fast paths.

A path's ``walk_logits(x, emb, base, perm)`` takes x (b, m), emb and base (b, m, d) (the
sample's embedding and placeholders) and perm (b, K) with K <= P = m*d distinct entries (a
whole walk, or its first K steps: a truncated walk), and returns logits (b, K + 1): column t
is the model's logit with the first t entries of ``perm`` replaced.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from shaver.attribution.estimator.mlp import FoldedMLP, fold_mlp
from shaver.attribution.estimator.paths_dcn import find_cross_path
from shaver.attribution.estimator.walks import WalkPath, prefix_sums, walk_deltas, walk_ranks


class GenericPath:
    """Any model of the interface: materialise every state and call ``model.head`` once."""

    name = "generic"

    def __init__(self, model: nn.Module):
        self.model = model

    def walk_logits(self, x, emb, base, perm):
        b, m, d = emb.shape
        players, walk = m * d, perm.shape[1]
        rank = walk_ranks(perm, players)
        steps = torch.arange(walk + 1, device=perm.device).view(1, -1, 1)
        drop = rank.unsqueeze(1) < steps  # (b, K+1, P)
        states = torch.where(drop, base.reshape(b, 1, players), emb.reshape(b, 1, players))
        logits = self.model.head(states.view(b * (walk + 1), m, d),
                                 x.repeat_interleave(walk + 1, dim=0))
        return logits.float().view(b, walk + 1)


class FMMLPPath:
    """logit = first_order(x) + FM(emb) + MLP(emb.flatten(1)) (DeepFM; FM without the MLP).

    The first-order term does not depend on the embedding; the FM term follows its per-column
    sums and total sum of squares, updated by one entry per step; the MLP's first layer
    (batch norm folded in) is updated incrementally: z_t = z_{t-1} + W[:, j_t] * delta_t.
    Only the MLP's later layers run on every state.
    """

    name = "fm-mlp"

    def __init__(self, linear: nn.Module | None, use_fm: bool, mlp: FoldedMLP | None):
        self.linear, self.use_fm, self.mlp = linear, use_fm, mlp

    def to_int8(self) -> FMMLPPath:
        """The same path with the MLP's later layers in int8 (the first stays incremental)."""
        return FMMLPPath(self.linear, self.use_fm, self.mlp.to_int8() if self.mlp else None)

    def walk_logits(self, x, emb, base, perm):
        b = emb.shape[0]
        delta = walk_deltas(emb, base, perm)
        logits = torch.zeros(b, perm.shape[1] + 1, device=emb.device)
        if self.linear is not None:
            logits += self.linear(x).float().reshape(b, 1)
        if self.use_fm:
            logits += self._fm(emb, base, perm, delta)
        if self.mlp is not None:
            logits += self._mlp(emb, perm, delta)
        return logits

    @staticmethod
    def _fm(emb, base, perm, delta):
        b, m, d = emb.shape
        e64, d64 = emb.double(), delta.double()
        col_steps = torch.zeros(b, perm.shape[1], d, dtype=torch.float64, device=emb.device)
        col_steps.scatter_(2, (perm % d).unsqueeze(2), d64.unsqueeze(2))
        sums = prefix_sums(e64.sum(1), col_steps)  # (b, P+1, d)
        sq_steps = (base.double() ** 2 - e64 ** 2).reshape(b, -1).gather(1, perm)
        squares = prefix_sums(e64.pow(2).sum((1, 2)), sq_steps)  # (b, P+1)
        return (0.5 * (sums.pow(2).sum(2) - squares)).float()

    def _mlp(self, emb, perm, delta):
        b, players = perm.shape
        first = self.mlp.layers[0]
        z0 = F.linear(emb.reshape(b, -1), first.weight, first.bias)  # (b, H1)
        # steps in place: gather W[:, j_t], scale by delta_t, prefix-sum, add z0
        z = torch.index_select(first.weight_t, 0, perm.reshape(-1)).view(b, players, -1)
        z.mul_(delta.unsqueeze(2)).cumsum_(1).add_(z0.unsqueeze(1))
        out = torch.empty(b, players + 1, device=emb.device)
        out[:, 0] = self.mlp.forward_from_first(z0).reshape(b).float()
        out[:, 1:] = self.mlp.forward_from_first(z.view(b * players, -1)).view(b, players).float()
        return out


def find_fast_path(model: nn.Module) -> WalkPath | None:
    """A model-specific path for ``model``, or None (the engine then uses the generic path).

    Recognised by structure (``linear`` / ``fm`` / ``mlp`` of a DeepFM or FM, ``cross`` /
    ``mlp`` / ``out`` of a DCN-V2 or DCN-Mix); the
    engine still checks it against the generic path before trusting it.
    """
    from shaver.models.layers import FactorizationMachine

    fm = getattr(model, "fm", None)
    mlp = getattr(model, "mlp", None)
    linear = getattr(model, "linear", None)
    if getattr(model, "cross", None) is not None:
        return find_cross_path(model)
    if not isinstance(fm, FactorizationMachine):
        return None
    folded = None
    if mlp is not None:
        folded = fold_mlp(mlp)
        if folded is None or folded.out_features != 1:
            return None
    return FMMLPPath(linear if isinstance(linear, nn.Module) else None, True, folded)
