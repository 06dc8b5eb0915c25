"""Fast path for DCN-V2 / DCN-Mix: the first cross layer's projections of x0 (and, in the
parallel structure, the MLP's first layer) are updated incrementally along the walk; the
element-wise x0 terms and the later layers run on every state.

A DCN-Mix layer runs as three wide GEMMs instead of per-expert products: the experts' V's and
the gate side by side, their C's as one block-diagonal matrix, their U's stacked with the gate
weights applied before the product (sum_e g_e U_e h_e = [U_1 .. U_E] (g (x) h)), so no
(rows, experts, dim) tensor is formed. Same values as the module, up to float rounding."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from shaver.attribution.estimator.mlp import FoldedMLP, fold_mlp
from shaver.attribution.estimator.walks import PooledWalk, prefix_sums, walk_states


class CrossPath:
    """logit = out(MLP(cross(x0))) (stacked) or out([cross(x0), MLP(x0)]) (parallel)."""

    name = "cross"

    def __init__(self, cross: nn.Module, mlp: FoldedMLP, out: nn.Linear, parallel: bool,
                 pooling: nn.Module | None = None):
        self.cross, self.mlp, self.out, self.parallel = cross, mlp, out, parallel
        self.pooling = pooling
        self.mix = hasattr(cross, "u")
        self.gate = getattr(cross, "gate", "softmax")
        self._mix: list[tuple[torch.Tensor, ...]] | None = None

    def to_int8(self) -> CrossPath:
        """The same path with the MLP layers that see every state in int8 (the cross layers
        and the parallel structure's incremental first MLP layer stay fp32)."""
        return CrossPath(self.cross, self.mlp.to_int8(), self.out, self.parallel,
                         self.pooling)

    def walk_logits(self, x, emb, base, perm, coef=None, w=None):
        b, slots, d = emb.shape
        walk = perm.shape[1]
        states = walk_states(emb, base, perm, None if coef is None else x).flatten(0, 1)
        if coef is None:
            x0 = states
        else:  # every state pooled as the head pools it (coefficients of the sample)
            x0 = self.pooling(states.view(-1, slots, d),
                              coef.repeat_interleave(walk + 1, dim=0)).flatten(1)
        pooled = PooledWalk(emb, base, perm, coef, self.pooling,
                            None if self.pooling is None else self.pooling.slot_field)
        perm, delta = pooled.pos, pooled.delta
        flat = pooled.start.reshape(b, -1)
        h = self._cross(x0, flat, perm, delta)
        if self.parallel:
            first = self.mlp.layers[0]
            z0 = F.linear(flat, first.weight, first.bias)
            z = prefix_sums(z0, first.weight_t[perm] * delta.unsqueeze(2)).flatten(0, 1)
            h = torch.cat([h, self.mlp.forward_from_first(z)], dim=1)
        else:
            h = self.mlp.forward(h)
        return self.out(h).float().view(b, walk + 1)

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
        experts, rank = c.c[0].shape[0], c.c[0].shape[1]
        x = x0
        for i, (proj, block, up, bias) in enumerate(self._mix_weights()):
            if i == 0:  # V and gate projections of x0 follow the walk incrementally
                both = self._incremental(proj, flat, perm, delta)
            else:
                both = x @ proj
            low = torch.tanh_(torch.tanh_(both[:, : experts * rank]) @ block)
            gate = both[:, experts * rank:]
            if self.gate == "softmax":
                gate = torch.softmax(gate, dim=1)
            # sum_e g_e (U_e low_e + b) = [U_1 .. U_E] (g (x) low) + (sum_e g_e) b
            low = low.view(-1, experts, rank).mul_(gate.unsqueeze(2)).view(-1, experts * rank)
            x = torch.addcmul(x, x0, torch.addmm(gate.sum(1, keepdim=True) * bias, low, up))
        return x

    def _mix_weights(self) -> list[tuple[torch.Tensor, ...]]:
        """Per layer of a DCN-Mix: the experts' V and the gate as one (dim, E*R + E) matrix,
        the C's as one block-diagonal (E*R, E*R), the U's stacked (E*R, dim), the bias."""
        if self._mix is None:
            c = self.cross
            experts, dim, rank = c.v[0].shape
            self._mix = [
                (torch.cat([c.v[i].detach().permute(1, 0, 2).reshape(dim, experts * rank),
                            c.gates[i].weight.detach().t()], dim=1).contiguous(),
                 torch.block_diag(*c.c[i].detach()),
                 c.u[i].detach().permute(1, 0, 2).reshape(dim, experts * rank).t().contiguous(),
                 c.bias[i].detach())
                for i in range(c.num_layers)]
        return self._mix


def find_cross_path(model: nn.Module) -> CrossPath | None:
    """A :class:`CrossPath` for a shaver DCN-V2 / DCN-Mix (checked later by the engine)."""
    from shaver.models.layers import CrossNetworkMix, CrossNetworkV2

    cross, mlp, out = (getattr(model, k, None) for k in ("cross", "mlp", "out"))
    if not isinstance(cross, (CrossNetworkMix, CrossNetworkV2)) or not isinstance(out, nn.Linear):
        return None
    folded = fold_mlp(mlp) if mlp is not None else None
    if folded is None:
        return None
    return CrossPath(cross, folded, out, getattr(model, "structure", "stacked") == "parallel",
                     getattr(model, "pooling", None))
