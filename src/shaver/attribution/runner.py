"""The attribution loop: rounds of batches, credits into the accumulator, stopping rule,
periodic checkpoints, progress. Works the same on one process and on N ranks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shaver.attribution.accumulator import Accumulator, SurrogateSample
from shaver.attribution.batches import game_batch
from shaver.attribution.binned import BinnedCredits
from shaver.attribution.distributed import DistContext
from shaver.attribution.estimator.common import Engine, entry_credits, global_entries
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import real_first, sample_permutations
from shaver.attribution.sampling import SampleSource
from shaver.attribution.stopping import CutStability
from shaver.errors import AttributionError
from shaver.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class StopRule:
    """After ``min_passes`` over D: the cut rule when ``cut`` is given, else SAGE's rule with
    ``tolerance`` (see :mod:`shaver.attribution.stopping`); plus hard caps (None = no cap)."""

    tolerance: float | None = 0.01
    max_samples: int | None = None
    max_seconds: float | None = None
    min_passes: float = 0.0
    cut: CutStability | None = None


@dataclass
class StreamConfig:
    seed: int = 0
    batch_size: int = 1024
    antithetic: bool = False
    checkpoint_path: Path | None = None
    checkpoint_every_s: float = 60.0
    settings: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False
    #: control variate: (x, y, w=w) -> surrogate credits (B, P), subtracted from the walk's credits
    #: (the accumulator's ``offset`` then holds the surrogate's exact mean over D)
    surrogate: Callable[..., torch.Tensor] | None = None
    #: sampled control variate (the accumulator has a ``cv``): after each round the sample S
    #: of the surrogate's mean covers the first ``surrogate_rows`` x (samples walked) rows of
    #: the stream's first pass (all of D at most), so the walked rows are always inside S
    surrogate_rows: float | None = None


Halves = list[tuple[torch.Tensor, torch.Tensor, float]]
#: Samples per walk group of a model with bags (grouped by real-player count).
WALK_GROUP = 128


def batch_credits(engine: Engine, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor,
                  antithetic: bool, w: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, Halves]:
    """(per-sample credits (B, P) in entry order, the walks behind them).

    ``x``, ``w``: rows of the stream (:mod:`shaver.attribution.batches`); ``perm`` (B, P) the
    samples' permutations. A walk visits the sample's real players first and stops after
    them (:func:`~shaver.attribution.permutations.real_first`; null players keep credit 0);
    with bags, samples are walked in groups of :data:`WALK_GROUP` of similar real-player
    counts, each group as far as its own longest walk, so the cost follows the real
    players, not the padded width. The walks: ``[(credits, walk, weight)]``, one per walk
    of each sample (two with ``antithetic``: the walk and its reverse, weight 0.5 each); the
    credits are their weighted sum. The binned accumulator needs each walk's own steps.
    """
    players = perm.shape[1]
    real = engine.imputer.real_players(x, w)
    if real is None:
        if not antithetic:
            credits = entry_credits(engine.losses(x, y, perm), perm)
            return credits, [(credits, perm, 1.0)]
        both = torch.cat([perm, perm.flip(1)])
        losses = engine.losses(torch.cat([x, x]), torch.cat([y, y]), both)
        credits = entry_credits(losses, both)
        first, second = credits[: x.shape[0]], credits[x.shape[0]:]
        return 0.5 * (first + second), [(first, perm, 0.5), (second, both[x.shape[0]:], 0.5)]
    counts = real.sum(1)
    groups = torch.argsort(counts, stable=True).split(WALK_GROUP)

    def walked(walk: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], players, device=x.device)
        for group in groups:
            part = walk[group, : int(counts[group].max())]
            losses = engine.losses(x[group], y[group], part, None if w is None else w[group])
            # a shorter row of the group walks on into its null players; their steps are
            # float noise of the recomputed loss (an ulp), never a credit: exactly 0
            out[group] = entry_credits(losses, part, players).masked_fill(~real[group], 0.0)
        return out

    walk = real_first(perm, real)
    credits = walked(walk)
    if not antithetic:
        return credits, [(credits, walk, 1.0)]
    back = real_first(perm.flip(1), real)
    second = walked(back)
    return 0.5 * (credits + second), [(credits, walk, 0.5), (second, back, 0.5)]


def _check_finite(credits: torch.Tensor, lo: int) -> bool:
    bad = ~torch.isfinite(credits).all(1)
    if bool(bad.any()):
        first = lo + int(bad.nonzero()[0, 0])
        log.error("non-finite loss at sample %d of the attribution stream", first)
        return False
    return True


def run_stream(engine: Engine, source: SampleSource, acc: Accumulator, *, cursor: int,
               rule: StopRule, config: StreamConfig, embed_dim: int,
               ctx: DistContext | None = None) -> tuple[int, str]:
    """Attribute samples ``cursor, cursor+1, ...`` into ``acc`` until the rule stops it.

    Returns (cursor after the last sample, stop reason: "converged", "max_samples",
    "max_seconds"). With N ranks, each round gives rank r the batch starting at
    ``cursor + r * batch_size``; ``acc`` holds the merged state on every rank.
    """
    ctx = ctx or DistContext.current()
    device = acc.sum.device
    pending = _pending_for(acc) if ctx.world > 1 else acc
    imputer = engine.imputer
    players = imputer.num_players
    limit = math.inf if rule.max_samples is None else int(rule.max_samples)
    start, last_save = time.monotonic(), time.monotonic()
    bar = progress_bar(total=None, initial=min(cursor, limit), desc="attribute", unit="sample",
                       disable=config.quiet or not ctx.is_main, dynamic_ncols=True)
    ratio = _sage_ratio(rule, acc)
    _show_progress(bar, rule, source, cursor, ratio)
    reason = _stop_reason(rule, source, cursor, acc, ratio, False) if cursor else ""
    try:
        while not reason:
            round_hi = int(min(cursor + ctx.world * config.batch_size, limit))
            lo = cursor + ctx.rank * config.batch_size
            hi = min(lo + config.batch_size, round_hi)
            finite = True
            if lo < hi:
                x, y, w = game_batch(source, lo, hi, device)
                perm = sample_permutations(config.seed, lo, hi - lo, players, device)
                credits, walks = batch_credits(engine, x, y, perm, config.antithetic, w)
                finite = _check_finite(credits, lo)
                if finite and config.surrogate is not None:
                    surrogate = config.surrogate(x, y, w=w)
                    credits = credits.double() - surrogate
                    walks = [(c.double() - surrogate, p, k) for c, p, k in walks]
                if finite:
                    real = imputer.real_players(x, w)
                    _add(pending, global_entries(x, embed_dim), credits, walks,
                         None if real is None else real.sum(1))
            if finite and acc.cv is not None and config.surrogate is not None:
                _extend_surrogate_sample(source, imputer, acc, pending, config, round_hi,
                                         embed_dim, ctx, device)
            budget = math.inf if rule.max_seconds is None else rule.max_seconds
            flags = torch.tensor([0.0 if finite else 1.0,
                                  float(time.monotonic() - start >= budget)], device=device)
            ctx.any(flags)
            if flags[0] > 0:
                raise AttributionError(
                    f"the loss became NaN/inf on samples {cursor}..{round_hi - 1} of the "
                    f"attribution stream (check the model and the placeholder values)")
            if ctx.world > 1:
                _merge_pending(ctx, acc, pending)
            bar.update(round_hi - cursor)
            cursor = round_hi
            ratio = _sage_ratio(rule, acc)
            reason = _stop_reason(rule, source, cursor, acc, ratio, bool(flags[1] > 0))
            _show_progress(bar, rule, source, cursor, ratio)
            now = time.monotonic()
            if config.checkpoint_path and ctx.is_main and (
                    reason or now - last_save >= config.checkpoint_every_s):
                acc.save(config.checkpoint_path, cursor=cursor, settings=config.settings)
                last_save = now
    finally:
        bar.close()
    log.info("attribution stopped (%s) after %d samples, ratio %.4g%s", reason, acc.count,
             acc.convergence_ratio(), f"; {rule.cut.status()}" if rule.cut else "")
    return cursor, reason


def _add(acc: Accumulator, entries: torch.Tensor, credits: torch.Tensor, walks: Halves,
         real: torch.Tensor | None = None) -> None:
    """Credits into ``acc`` (and its bins; ``real`` (B,): each sample's real players, None:
    all of them)."""
    acc.add(entries, credits)
    if acc.binned is not None:
        for walk_credits, walk_perm, weight in walks:
            acc.binned.add(entries, walk_credits, walk_perm, weight, real)


def _extend_surrogate_sample(source: SampleSource, imputer: PlaceholderImputer,
                             acc: Accumulator, pending: Accumulator,
                             config: StreamConfig, walked: int, embed_dim: int,
                             ctx: DistContext, device: torch.device) -> None:
    """Grow S (the first ``acc.cv.count`` rows of pass 0) to ``surrogate_rows * walked`` rows
    (at most D): rank r takes the r-th contiguous share of the new rows."""
    target = min(source.size, int(math.ceil(float(config.surrogate_rows or 1.0) * walked)))
    lo = acc.cv.count
    if target <= lo:
        return
    mine_lo = lo + (target - lo) * ctx.rank // ctx.world
    mine_hi = lo + (target - lo) * (ctx.rank + 1) // ctx.world
    for a in range(mine_lo, mine_hi, config.batch_size):
        x, y, w = game_batch(source, a, min(a + config.batch_size, mine_hi), device)
        pending.cv.add(global_entries(x, embed_dim), config.surrogate(x, y, w=w))


def _pending_for(acc: Accumulator) -> Accumulator:
    """An empty accumulator shaped like ``acc`` (bins and surrogate sample included) for one
    round's increments."""
    pending = Accumulator(acc.sum.numel(), acc.sum.device)
    if acc.binned is not None:
        pending.binned = BinnedCredits(acc.sum.numel(), acc.binned.players,
                                       device=acc.sum.device, edges=acc.binned.edges)
    if acc.cv is not None:
        pending.cv = SurrogateSample(acc.sum.numel(), acc.cv.size, acc.sum.device)
    return pending


def _merge_pending(ctx: DistContext, acc: Accumulator, pending: Accumulator) -> None:
    counts = [float(pending.count), float(pending.cv.count if pending.cv else 0)]
    count = torch.tensor(counts, dtype=torch.float64, device=acc.sum.device)
    binned = () if pending.binned is None else (pending.binned.sums,)
    cv = () if pending.cv is None else (pending.cv.sum, pending.cv.sumsq)
    ctx.all_reduce_sum(pending.sum, pending.sumsq, count, *binned, *cv)
    pending.count = int(count[0].item())
    if pending.cv is not None:
        pending.cv.count = int(count[1].item())
    acc.merge(pending)
    pending.reset()


def _sage_ratio(rule: StopRule, acc: Accumulator) -> float:
    """SAGE's ratio of ``acc`` when the SAGE rule is in force (one pass over the entries,
    once a round), else nan (the cut rule does not look at it)."""
    return math.nan if rule.cut is not None else acc.convergence_ratio()


def _stop_reason(rule: StopRule, source: SampleSource, cursor: int, acc: Accumulator,
                 ratio: float, out_of_time: bool) -> str:
    """"max_samples", "stable" (cut rule), "converged" (SAGE rule, ``ratio``), "max_seconds"
    or ""."""
    if rule.max_samples is not None and cursor >= rule.max_samples:
        return "max_samples"
    if cursor >= rule.min_passes * source.size:
        if rule.cut is not None:
            if rule.cut.can_fire:
                verdict = rule.cut.check(acc, force=out_of_time)
                if verdict is not None and verdict.stable:
                    return "stable"
        elif rule.tolerance is not None and ratio < rule.tolerance:
            return "converged"
    return "max_seconds" if out_of_time else ""


def _show_progress(bar: Any, rule: StopRule, source: SampleSource, cursor: int,
                   ratio: float) -> None:
    """Bar total (expected samples) and what the stopping rule is waiting for (``ratio``:
    SAGE's, when that rule is in force)."""
    floor = max(int(math.ceil(rule.min_passes * source.size)), cursor)
    if rule.max_samples is not None:
        bar.total = int(rule.max_samples)
    elif rule.cut is not None:
        last = rule.cut.last
        share = last.worst()[1] if last is not None else math.inf
        scale = (share / rule.cut.fraction) ** 2 if math.isfinite(share) else 1.0
        bar.total = int(max(floor, cursor * scale)) if cursor >= floor else floor
    else:
        fine = rule.tolerance is not None and math.isfinite(ratio) and cursor > 0
        bar.total = int(max(floor, cursor * (ratio / rule.tolerance) ** 2)) if fine else floor
    if rule.cut is not None:
        waiting = (f"{cursor / source.size:.2f}/{rule.min_passes:g} passes"
                   if cursor < rule.min_passes * source.size else rule.cut.status())
        bar.set_postfix_str(waiting, refresh=False)
    else:
        bar.set_postfix(ratio=f"{ratio:.4f}", refresh=False)
