"""A control variate for the permutation estimator: path-integrated gradient credits.

The Shapley value of an entry over D is phi_i = mean over samples of c_i(x, pi), the credit of
one random walk. For any surrogate s_i(x) whose mean over D is known exactly,

    phi_i = mean_D[s_i] + E[c_i(x, pi) - s_i(x)]

so estimating the second term by the walks instead of E[c_i] is still unbiased, and its
variance is that of c - s: small when s follows how the credit varies from sample to sample
(the label, the sample's other features), which is where most of the variance of c is. The
surrogate here is the Aumann-Shapley value (integrated gradients) of the same loss along the
straight path from the sample's embedding e to its placeholders b:

    s_i(x) = (b_i - e_i) * mean_q dL/de_i (e + a_q (b - e)),   a_q = (q + 1/2) / Q,

Q backward passes per sample (midpoint rule), against m*d + 1 forward passes of one walk. Its
mean over D takes one extra pass over D at that cost before the walks start.
"""

from __future__ import annotations

import math

import torch

from shaver.attribution.distributed import DistContext
from shaver.attribution.estimator.common import bce, global_entries
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.sampling import SampleSource
from shaver.progress import progress_bar

#: Quadrature points of the path integral (variance reduction flattens out beyond ~4).
DEFAULT_POINTS = 4


def path_credits(imputer: PlaceholderImputer, x: torch.Tensor, y: torch.Tensor,
                 points: int = DEFAULT_POINTS) -> torch.Tensor:
    """x (B, m) global ids, y (B,) -> surrogate credits (B, m*d) in ENTRY order, float64.

    Row b sums to about loss(all entries replaced) - loss(full model) of sample b (exactly in
    the limit of many ``points``), like the walk's credits.
    """
    model = imputer.model
    emb, base = imputer.embed(x)
    step = base - emb
    grads = torch.zeros_like(emb)
    with torch.enable_grad():
        for q in range(points):
            point = (emb + (q + 0.5) / points * step).detach().requires_grad_(True)
            loss = bce(model.head(point, x).reshape(-1), y).sum()
            grads += torch.autograd.grad(loss, point)[0]
    return (grads.double() / points * step.double()).reshape(x.shape[0], -1)


@torch.no_grad()
def surrogate_mean(imputer: PlaceholderImputer, source: SampleSource, *, batch_size: int,
                   points: int = DEFAULT_POINTS, ctx: DistContext | None = None,
                   quiet: bool = False) -> torch.Tensor:
    """float64 (n*d,): mean of :func:`path_credits` over the samples of D (one pass; under
    torch.distributed each rank takes every world-th batch and the sums are all-reduced)."""
    ctx = ctx or DistContext.current()
    weight = imputer.model.embedding.weight
    d = imputer.embed_dim
    total = torch.zeros(weight.shape[0] * d, dtype=torch.float64, device=weight.device)
    starts = range(ctx.rank * batch_size, source.size, ctx.world * batch_size)
    bar = progress_bar(total=math.ceil(source.size / batch_size), desc="control variate",
                       unit="batch", disable=quiet or not ctx.is_main, leave=False,
                       dynamic_ncols=True)
    for lo in starts:
        hi = min(lo + batch_size, source.size)
        x_np, y_np = source.batch(lo, hi)
        x = torch.from_numpy(x_np).to(weight.device)
        y = torch.from_numpy(y_np).to(weight.device)
        total.index_add_(0, global_entries(x, d).reshape(-1),
                         path_credits(imputer, x, y, points).reshape(-1))
        bar.update(ctx.world)
    bar.close()
    ctx.all_reduce_sum(total)
    return total / max(source.size, 1)
