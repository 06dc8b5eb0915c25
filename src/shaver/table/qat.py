"""Training a plan on its stored grid: the straight-through fake quantiser of a plan.

Within :func:`on_stored_grid`, every parameter of a plan model is read through the rule its
artifact stores it with: the table's kept entries by their tier
(:func:`~shaver.table.tiers.quantize_tiers`), the first-order tables as
:func:`~shaver.table.tiers.tiered_copy` and the head precision store them, the head's
matrices (and vectors, for fp16) as :func:`~shaver.table.head.stored_head_values` does. The
forward pass sees exactly the stored values; the backward pass is the straight-through
estimator: the gradient of the stored value is given to the latent fp32 value unchanged
(times the keep-mask for the table, so pruned entries get none).

Scales are refitted at every step by the artifact's own rule (absmax for int8, the
clip-ratio MSE search for int4/int2), never learned: the forward then equals the artifact
of the current latent values at every step, so the epoch early stopping keeps is the model
:func:`~shaver.table.tiers.plan_copy` rebuilds from the latent values, to the bit (a learned
scale would be replaced by the artifact's rule at export, and an epoch-wise refit would
validate a model the artifact does not store).

On leaving the block the parametrisations are removed and the parameters hold the latent
values; ``plan_copy(model, tier_map, tiers, codebook, head_dtype)`` gives the stored model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from shaver.runtime import headq
from shaver.runtime.layout import dequantize_per_field, quantize_per_field
from shaver.runtime.tiered import TierSpec
from shaver.table.head import stored_head_values
from shaver.table.tiers import TieredEmbedding, first_order_dtype, quantize_tiers

Rule = Callable[[np.ndarray], np.ndarray]


class _StraightThrough(torch.autograd.Function):
    """forward: the stored values; backward: the gradient as is (times ``keep`` if given)."""

    @staticmethod
    def forward(ctx, latent: torch.Tensor, stored: torch.Tensor,
                keep: torch.Tensor | None) -> torch.Tensor:
        ctx.keep = keep
        return stored

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        keep = ctx.keep
        return (grad if keep is None else grad * keep.to(grad.dtype)), None, None


class StoredGrid(nn.Module):
    """Parametrisation: latent fp32 tensor -> the values the artifact stores (``rule``),
    with a straight-through gradient (masked by ``keep``, bool of the tensor's shape)."""

    def __init__(self, rule: Rule, keep: torch.Tensor | None = None):
        super().__init__()
        self.rule = rule
        self.register_buffer("keep", keep, persistent=False)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        values = self.rule(latent.detach().float().cpu().numpy())
        stored = torch.from_numpy(np.ascontiguousarray(values, np.float32)).to(latent)
        return _StraightThrough.apply(latent, stored, self.keep)


def table_rule(emb: TieredEmbedding) -> Rule:
    """The stored values of a TieredEmbedding's table: its tiers, pruned entries 0."""
    tier_map = emb.tier_map.cpu().numpy()
    fields, tiers = list(emb.field_dims), list(emb.tiers)
    return lambda w: quantize_tiers(w, tier_map, fields, tiers)[0]


def head_rule(name: str, shape: Sequence[int], n: int, field_dims: Sequence[int],
              tiers: Sequence[TierSpec], head_dtype: str) -> Rule | None:
    """The stored values of head parameter ``name`` in a plan of ``tiers`` and
    ``head_dtype`` (None where it is stored as trained), as :func:`plan_copy` stores it."""
    if len(shape) == 2 and shape[0] == n and n > 1:  # a first-order table
        fo = first_order_dtype(tiers)
        dtypes = [fo] + ([headq.first_order_dtype(fo, head_dtype)] if head_dtype != "fp32"
                         else [])
        if all(d == "fp32" for d in dtypes):
            return None

        def table(w: np.ndarray) -> np.ndarray:
            for dtype in dtypes:
                w = dequantize_per_field(*quantize_per_field(w, field_dims, dtype), field_dims)
            return w
        return table
    if head_dtype == "fp32":
        return None
    return lambda w: stored_head_values(name, torch.from_numpy(w), head_dtype)


@contextmanager
def on_stored_grid(model: nn.Module, head_dtype: str = "fp32") -> Iterator[nn.Module]:
    """Within the block, ``model`` (its embedding a TieredEmbedding) computes with the
    stored values of its plan and trains its latent values through them (module doc)."""
    emb = model.embedding
    n = int(emb.weight.shape[0])
    tiers = list(emb.tiers)
    done: list[tuple[nn.Module, str]] = []
    try:
        parametrize.register_parametrization(emb, "weight", StoredGrid(table_rule(emb),
                                                                      emb.mask.clone()))
        done.append((emb, "weight"))
        for module_name, module in list(model.named_modules()):
            if module is emb or module_name.startswith("embedding."):
                continue
            for pname, param in list(module.named_parameters(recurse=False)):
                full = f"{module_name}.{pname}" if module_name else pname
                rule = head_rule(full, tuple(param.shape), n, emb.field_dims, tiers,
                                 head_dtype)
                if rule is not None and param.is_floating_point():
                    parametrize.register_parametrization(module, pname, StoredGrid(rule))
                    done.append((module, pname))
        yield model
    finally:
        for module, pname in reversed(done):
            parametrize.remove_parametrizations(module, pname, leave_parametrized=False)
