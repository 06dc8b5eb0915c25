"""Fast path for DCN-V2 / DCN-Mix: the first cross layer's projections of x0 (and, in the
parallel structure, the MLP's first layer) are updated incrementally along the walk; the
element-wise x0 terms and the later layers run on every state."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from shaver.attribution.estimator.mlp import FoldedMLP, fold_mlp
from shaver.attribution.estimator.paths import prefix_sums, walk_deltas


class CrossPath:
    """logit = out(MLP(cross(x0))) (stacked) or out([cross(x0), MLP(x0)]) (parallel)."""

    name = "cross"

    def __init__(self, cross: nn.Module, mlp: FoldedMLP, out: nn.Linear, parallel: bool):
        self.cross, self.mlp, self.out, self.parallel = cross, mlp, out, parallel
        self.mix = hasattr(cross, "u")

    def walk_logits(self, x, emb, base, perm):
        b, m, d = emb.shape
        players = m * d
        delta = walk_deltas(emb, base, perm)
        rank = torch.empty_like(perm).scatter_(
            1, perm, torch.arange(players, device=perm.device).expand_as(perm))
        steps = torch.arange(players + 1, device=perm.device).view(1, -1, 1)
        x0 = torch.where(rank.unsqueeze(1) < steps, base.reshape(b, 1, players),
                         emb.reshape(b, 1, players)).flatten(0, 1)  # (b*(P+1), P)
        flat = emb.reshape(b, players)
        h = self._cross(x0, flat, perm, delta)
        if self.parallel:
            first = self.mlp.layers[0]
            z0 = F.linear(flat, first.weight, first.bias)
            z = prefix_sums(z0, first.weight_t[perm] * delta.unsqueeze(2)).flatten(0, 1)
            h = torch.cat([h, self.mlp.forward_from_first(z)], dim=1)
        else:
            h = self.mlp.forward_from_first(F.linear(h, self.mlp.layers[0].weight,
                                                     self.mlp.layers[0].bias))
        return self.out(h).float().view(b, players + 1)

    def _incremental(self, weight_t: torch.Tensor, flat, perm, delta) -> torch.Tensor:
        """weight_t (P, *k): response of input j -> (b*(P+1), *k) along the walk."""
        start = torch.tensordot(flat, weight_t, dims=([1], [0]))
        steps = weight_t[perm] * delta.view(*delta.shape, *([1] * (weight_t.dim() - 1)))
        return prefix_sums(start, steps).flatten(0, 1)

    def _cross(self, x0, flat, perm, delta):
        c = self.cross
        if not self.mix:
            layer = c.layers[0]
            lin = self._incremental(layer.weight.t(), flat, perm, delta) + layer.bias
            x = x0 * lin + x0
            for layer in c.layers[1:]:
                x = x0 * layer(x) + x
            return x
        x = x0
        for i in range(c.num_layers):
            if i == 0:
                v = c.v[0].permute(1, 0, 2)  # (P, experts, rank)
                low = torch.tanh(self._incremental(v, flat, perm, delta))
                gate_logits = self._incremental(c.gates[0].weight.t(), flat, perm, delta)
            else:
                low = torch.tanh(torch.einsum("bd,edr->ber", x, c.v[i]))
                gate_logits = c.gates[i](x)
            low = torch.tanh(torch.einsum("ber,ers->bes", low, c.c[i]))
            up = torch.einsum("bes,eds->bed", low, c.u[i]) + c.bias[i]
            gate = torch.softmax(gate_logits, dim=1).unsqueeze(2)
            x = ((x0.unsqueeze(1) * up) * gate).sum(dim=1) + x
        return x


def find_cross_path(model: nn.Module) -> CrossPath | None:
    """A :class:`CrossPath` for a shaver DCN-V2 / DCN-Mix (checked later by the engine)."""
    from shaver.models.layers import CrossNetworkMix, CrossNetworkV2

    cross, mlp, out = (getattr(model, k, None) for k in ("cross", "mlp", "out"))
    if not isinstance(cross, (CrossNetworkMix, CrossNetworkV2)) or not isinstance(out, nn.Linear):
        return None
    folded = fold_mlp(mlp) if mlp is not None else None
    if folded is None:
        return None
    return CrossPath(cross, folded, out, getattr(model, "structure", "stacked") == "parallel")
