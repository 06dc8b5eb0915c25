"""Ways to evaluate every state of a walk: the generic path and model-specific fast paths.

A path's ``walk_logits(x, emb, base, perm, coef=None, w=None)`` takes x (b, slots), emb and
base (b, slots, d) (the sample's slot embeddings and placeholders), perm (b, K) with K <= P =
slots*d distinct entries (a whole walk, or its first K steps: a truncated walk), the bags'
pooling coefficients ``coef`` (b, slots) and weights ``w`` (None without bags), and returns
logits (b, K + 1): column t is the model's logit with the first t entries of ``perm``
replaced (inside their bag, keeping their coefficient: :mod:`shaver.attribution.imputer`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from shaver.attribution.estimator.mlp import FoldedMLP, fold_mlp
from shaver.attribution.estimator.paths_dcn import find_cross_path
from shaver.attribution.estimator.walks import PooledWalk, WalkPath, prefix_sums, walk_states
from shaver.attribution.imputer import call_head


class GenericPath:
    """Any model of the interface: materialise every state and call ``model.head`` once."""

    name = "generic"

    def __init__(self, model: nn.Module):
        self.model = model

    def walk_logits(self, x, emb, base, perm, coef=None, w=None):
        b, m, d = emb.shape
        walk = perm.shape[1]
        states = walk_states(emb, base, perm, None if coef is None else x)  # (b, K+1, P)
        logits = call_head(self.model, states.view(b * (walk + 1), m, d),
                           x.repeat_interleave(walk + 1, dim=0),
                           None if w is None else w.repeat_interleave(walk + 1, dim=0))
        return logits.float().view(b, walk + 1)


class FMMLPPath:
    """logit = first_order(x) + FM(emb) + MLP(emb.flatten(1)) (DeepFM; FM without the MLP).

    The first-order term does not depend on the embedding; the FM term follows its per-column
    sums and total sum of squares, updated by one pooled position per step (with bags, the
    square's change needs that position's running value: several slots share it); the MLP's
    first layer (batch norm folded in) is updated incrementally: z_t = z_{t-1} +
    W[:, pos_t] * delta_t, pos_t the pooled position and delta_t its (coefficient-scaled)
    change. Only the MLP's later layers run on every state.
    """

    name = "fm-mlp"

    def __init__(self, linear: nn.Module | None, use_fm: bool, mlp: FoldedMLP | None,
                 pooling: nn.Module | None = None):
        self.linear, self.use_fm, self.mlp, self.pooling = linear, use_fm, mlp, pooling

    def to_int8(self) -> FMMLPPath:
        """The same path with the MLP's later layers in int8 (the first stays incremental)."""
        return FMMLPPath(self.linear, self.use_fm, self.mlp.to_int8() if self.mlp else None,
                         self.pooling)

    def walk_logits(self, x, emb, base, perm, coef=None, w=None):
        b = emb.shape[0]
        walk = PooledWalk(emb, base, perm, coef, self.pooling,
                          None if self.pooling is None else self.pooling.slot_field)
        logits = torch.zeros(b, perm.shape[1] + 1, device=emb.device)
        if self.linear is not None:
            first = self.linear(x) if coef is None else self.linear(x, coef)
            logits += first.float().reshape(b, 1)
        if self.use_fm:
            logits += self._fm(walk)
        if self.mlp is not None:
            logits += self._mlp(walk)
        return logits

    @staticmethod
    def _fm(walk: PooledWalk):
        start, pos = walk.start, walk.pos
        b, _, d = start.shape
        e64, d64 = start.double(), walk.delta.double()
        col_steps = torch.zeros(b, pos.shape[1], d, dtype=torch.float64, device=start.device)
        col_steps.scatter_(2, (pos % d).unsqueeze(2), d64.unsqueeze(2))
        sums = prefix_sums(e64.sum(1), col_steps)  # (b, K+1, d)
        squares = prefix_sums(e64.pow(2).sum((1, 2)), walk.square_steps())  # (b, K+1)
        return (0.5 * (sums.pow(2).sum(2) - squares)).float()

    def _mlp(self, walk: PooledWalk):
        b, players = walk.pos.shape
        first = self.mlp.layers[0]
        z0 = F.linear(walk.start.reshape(b, -1), first.weight, first.bias)  # (b, H1)
        # steps in place: gather W[:, pos_t], scale by delta_t, prefix-sum, add z0
        z = torch.index_select(first.weight_t, 0, walk.pos.reshape(-1)).view(b, players, -1)
        z.mul_(walk.delta.unsqueeze(2)).cumsum_(1).add_(z0.unsqueeze(1))
        out = torch.empty(b, players + 1, device=walk.start.device)
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
    return FMMLPPath(linear if isinstance(linear, nn.Module) else None, True, folded,
                     getattr(model, "pooling", None))
