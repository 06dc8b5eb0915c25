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

Q backward passes per sample (midpoint rule), against m*d + 1 forward passes of one walk.

Its mean over D comes in one of two ways (``control_variate=`` of
:func:`shaver.attribution.api.attribute`):

* ``"exact"``: one pass over D at that cost before the walks start. On MovieLens-100k that
  pass costs about a third of a training epoch; its cost grows with |D|, so within one
  epoch's compute on large data it cannot even finish.
* ``"sampled"`` (double sampling): the mean over S, the first ``r * n_W`` rows of the
  stream's first pass, where n_W is the number of samples walked so far (S grows with the
  walks, S is all of D at most). What must hold for

      phi_i = mean_S[s_i] + mean_W[c_i - s_i]

  to stay unbiased: S is a uniform random sample of D (a prefix of a uniformly random
  permutation of D is), each walked sample is a uniformly drawn row of D with a permutation
  drawn independently of S, and both sizes are fixed in advance (not chosen by looking at
  the values: the stopping rule does look, as for every estimator here). Then E[mean_S s] =
  mean_D s and E[mean_W (c - s)] = phi - mean_D s, whatever the overlap of S and W. Its
  variance is Var(c - s) / n_W + (1 - |S|/|D|) Var(s) / |S| plus a covariance term of order
  Cov(s, c - s) / |S| (left out of the standard errors; it is negative where s tracks c).
  With a walk a times as costly as a surrogate row and Var(s) = k Var(c - s), the variance
  per second is lowest near r = sqrt(a k).
"""

from __future__ import annotations

import math

import torch

from shaver.attribution.batches import game_batch
from shaver.attribution.distributed import DistContext
from shaver.attribution.estimator.common import bce, global_entries, real_entries
from shaver.attribution.imputer import PlaceholderImputer, call_head
from shaver.attribution.sampling import SampleSource
from shaver.attribution.slots import slot_leaders
from shaver.errors import AttributionError
from shaver.progress import progress_bar

#: Quadrature points of the path integral. One (the midpoint) leaves 0.405 / 0.422 of a
#: walk's variance on MovieLens-100k DeepFM / DCN-Mix against 0.368 / 0.376 with four, at a
#: quarter of the cost (bench/attribution/row_sampling.py): per second one point wins, both
#: for the exact pass and for the sampled mean.
DEFAULT_POINTS = 1
CONTROL_VARIATES: tuple[str, ...] = ("off", "exact", "sampled")
#: Rows of S per walked sample: sqrt(a k), with a the cost of a walk in surrogate rows and
#: k = Var(s) / Var(c - s), is 8.7 on MovieLens-100k DeepFM (int8 walks, one point: a = 32.8,
#: k = 2.31) and 10.9 on DCN-Mix (a = 50.8, k = 2.32) (bench/attribution/row_sampling.py);
#: on Criteo-shaped models (39 fields) a walk costs more surrogate rows still. 8 gives 1.5x
#: the variance per second of plain walks there before S covers D, up to 2.4x after.
DEFAULT_SURROGATE_ROWS = 8.0


def surrogate_setting(mode: str, points: int, rows: float) -> str:
    """The ``control_variate`` entry of an attribution's settings (part of its state hash)."""
    return f"path-gradient-{int(points)}" + (f"-sampled-{float(rows):g}"
                                             if mode == "sampled" else "")


def points_of(setting: str) -> int:
    """Quadrature points of a ``control_variate`` settings entry ("path-gradient-Q[...]")."""
    try:
        return int(str(setting).split("-")[2])
    except (IndexError, ValueError):
        raise AttributionError(f"unknown control variate {setting!r} in the attribution's "
                               f"settings (expected 'path-gradient-Q...')") from None


def control_variate_mode(value: bool | str) -> str:
    """``True`` / ``False`` / "exact" / "sampled" / "off" -> one of :data:`CONTROL_VARIATES`."""
    if value is True:
        return "exact"
    if value is False or value is None:
        return "off"
    if value not in CONTROL_VARIATES:
        raise AttributionError(f"control_variate must be one of {', '.join(CONTROL_VARIATES)} "
                               f"(or True / False), got {value!r}")
    return str(value)


def path_credits(imputer: PlaceholderImputer, x: torch.Tensor, y: torch.Tensor,
                 points: int = DEFAULT_POINTS, w: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, slots) global ids, y (B,), w bag weights or None -> surrogate credits
    (B, slots*d) in ENTRY order, float64.

    Row b sums to about loss(all entries replaced) - loss(full model) of sample b (exactly in
    the limit of many ``points``), like the walk's credits. The gradients are taken w.r.t.
    the SLOT embeddings, through the head's pooling (a slot's gradient carries its
    coefficient: 0 for pads and zero-coefficient slots, which get credit 0).
    """
    model = imputer.model
    emb, base, _ = imputer.embed(x, w)
    step = base - emb
    grads = torch.zeros_like(emb)
    with torch.enable_grad():
        for q in range(points):
            point = (emb + (q + 0.5) / points * step).detach().requires_grad_(True)
            loss = bce(call_head(model, point, x, w).reshape(-1), y).sum()
            grads += torch.autograd.grad(loss, point)[0]
    if imputer.has_bags:  # a repeated id is one player: its copies' gradients add up
        grads = torch.zeros_like(grads).scatter_add_(
            1, slot_leaders(x).unsqueeze(2).expand_as(grads), grads)
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
        x, y, w = game_batch(source, lo, hi, weight.device)
        total.index_add_(0, *real_entries(global_entries(x, d),
                                          path_credits(imputer, x, y, points, w)))
        bar.update(ctx.world)
    bar.close()
    ctx.all_reduce_sum(total)
    return total / max(source.size, 1)
