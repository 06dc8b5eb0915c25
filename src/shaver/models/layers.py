"""Small building blocks shared by the models: one job each, shapes in every docstring.

None of these layers reads the embedding table: they see the embedding block ``emb``
(batch, fields, d) a model's ``embedding`` produced, or the ids ``x`` for first-order terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from shaver.errors import ModelError


class FeaturesLinear(nn.Module):
    """First-order term: one scalar weight per global id, plus a bias.

    ``weight`` is an ``nn.Embedding(num_features, 1)`` (so DeepFM's ``model.linear.weight`` is
    the (n, 1) first-order table) and ``bias`` a (1,) parameter.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.weight = nn.Embedding(num_features, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.zeros_(self.weight.weight)

    def forward(self, x: torch.Tensor, coef: torch.Tensor | None = None) -> torch.Tensor:
        """x: LongTensor (batch, slots) global ids, coef: (batch, slots) pooling
        coefficients (None: every slot a single-valued field's) -> (batch,)."""
        if coef is None:
            return self.weight(x).sum(dim=(1, 2)) + self.bias
        valid = x >= 0
        values = self.weight.weight.new_zeros(x.shape)
        values[valid] = self.weight(x[valid]).squeeze(1)
        return (values * coef.to(values.dtype)).sum(dim=1) + self.bias


class FactorizationMachine(nn.Module):
    """Second-order FM term: sum over field pairs i < j of <e_i, e_j>.

    Computed as 0.5 * sum_k ((sum_i e_ik)^2 - sum_i e_ik^2), which equals the pairwise sum.
    """

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """emb: (batch, fields, d) -> (batch,)."""
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_square = emb.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


def _check_sizes(what: str, sizes: Sequence[int]) -> list[int]:
    sizes = [int(s) for s in sizes]
    if any(s <= 0 for s in sizes):
        raise ModelError(f"{what} must be positive integers, got {sizes}")
    return sizes


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout}")
    return float(dropout)


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """float32 mask shaped like ``x``: ``1 / q`` with probability ``q``, else 0, where
    ``q = 1 - round(p * 2**32) / 2**32`` (within 2**-33 of ``1 - p``, and the mask's mean is
    exactly 1). The 32-bit draws come from numpy's PCG64 (about 2x faster on CPU than
    torch's uniform sampler) seeded by one draw of torch's generator, so
    ``torch.manual_seed`` governs them."""
    cut = min(round(p * 2**32), 2**32 - 1)
    scale = np.float32(2**32 / (2**32 - cut))
    seed = int(torch.randint(0, 2**62, (1,)))
    n = x.numel()
    bits = np.random.PCG64(seed).random_raw((n + 1) // 2).view(np.uint32)[:n]
    mask = np.empty(n, dtype=np.float32)
    np.multiply(bits >= np.uint32(cut), scale, out=mask)
    return torch.from_numpy(mask).view(x.shape).to(x.dtype)


class _ScaledMask(torch.autograd.Function):
    """x * mask (:func:`_keep_mask`); the float mask is saved for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        mask = _keep_mask(x, p)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class FastDropout(nn.Dropout):
    """``nn.Dropout``'s distribution, about 2x cheaper forward + backward on CPU.

    Each element is kept with probability ``1 - p`` (to 2**-33) and scaled so the layer's
    expected output equals its input, as ``nn.Dropout`` does; the random numbers are seeded
    from torch's generator, so ``torch.manual_seed`` makes it reproducible. On CPU,
    ``F.dropout``'s Bernoulli sampling costs more than a DeepFM MLP layer's matmuls at batch
    2048; this draws 32-bit integers with numpy's PCG64 instead and keeps one float mask
    for backward. On CUDA (and for ``inplace``) it is ``F.dropout`` itself. An instance of
    ``nn.Dropout``, so code that recognises dropout layers (eval-mode folding, export) treats
    it as one; in eval mode it is the identity.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.inplace or self.p == 1.0:
            return super().forward(x)
        return _ScaledMask.apply(x, self.p)


class MLP(nn.Sequential):
    """Linear -> BatchNorm1d -> ReLU -> Dropout per hidden layer, then (optionally) Linear to 1.

    forward: (batch, input_dim) -> (batch, 1) with ``output_layer``, else (batch, hidden[-1]).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        *,
        batch_norm: bool = True,
        output_layer: bool = True,
    ):
        hidden = _check_sizes("mlp hidden sizes", hidden)
        dropout = _check_dropout(dropout)
        layers: list[nn.Module] = []
        width = int(input_dim)
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(FastDropout(dropout))
            width = size
        if output_layer:
            layers.append(nn.Linear(width, 1))
        super().__init__(*layers)
        self.output_dim = 1 if output_layer else width


class CrossNetworkV2(nn.Module):
    """DCN-V2 full-rank cross layers: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.

    forward: (batch, dim) -> (batch, dim).
    """

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        if num_layers <= 0:
            raise ModelError(f"cross layers must be positive, got {num_layers}")
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (batch, dim) -> (batch, dim)."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


GATES = ("softmax", "identity")


class CrossNetworkMix(nn.Module):
    """DCN-Mix cross layers: a gated mixture of low-rank experts per layer.

    Expert e of layer l: E(x) = x_0 * (U_e tanh(C_e tanh(V_e^T x_l)) + b_l); the layer output is
    sum_e G(x_l)_e E(x) + x_l (DCN-V2's "mixture of low-rank" variant) with gate weights
    G = softmax(g(x_l)) (``gate="softmax"``, as in DCN-V2) or g(x_l) itself
    (``gate="identity"``, the Shaver authors' default).
    forward: (batch, dim) -> (batch, dim).
    """

    def __init__(self, dim: int, num_layers: int, num_experts: int = 4, rank: int = 64,
                 gate: str = "softmax"):
        super().__init__()
        if gate not in GATES:
            raise ModelError(f"gate must be one of {', '.join(GATES)}, got {gate!r}")
        self.gate = gate
        if min(num_layers, num_experts, rank) <= 0:
            raise ModelError(
                f"cross layers, experts and rank must be positive, got "
                f"{num_layers}, {num_experts}, {rank}"
            )
        self.num_layers = num_layers

        def param(*shape: int) -> nn.Parameter:
            return nn.Parameter(nn.init.xavier_normal_(torch.empty(*shape)))

        self.u = nn.ParameterList(param(num_experts, dim, rank) for _ in range(num_layers))
        self.v = nn.ParameterList(param(num_experts, dim, rank) for _ in range(num_layers))
        self.c = nn.ParameterList(param(num_experts, rank, rank) for _ in range(num_layers))
        self.bias = nn.ParameterList(
            nn.Parameter(torch.zeros(dim)) for _ in range(num_layers)
        )
        self.gates = nn.ModuleList(nn.Linear(dim, num_experts, bias=False) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (batch, dim) -> (batch, dim)."""
        x = x0
        for i in range(self.num_layers):
            low = torch.tanh(torch.einsum("bd,edr->ber", x, self.v[i]))  # (batch, experts, rank)
            low = torch.tanh(torch.einsum("ber,ers->bes", low, self.c[i]))
            up = torch.einsum("bes,eds->bed", low, self.u[i]) + self.bias[i]  # (b, e, dim)
            experts = x0.unsqueeze(1) * up
            gate = self.gates[i](x)  # (batch, experts)
            if self.gate == "softmax":
                gate = torch.softmax(gate, dim=1)
            gate = gate.unsqueeze(2)
            x = (experts * gate).sum(dim=1) + x
        return x
