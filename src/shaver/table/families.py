"""Mixed precision by attribution: one ranking decides what is pruned and how many bits the
rest gets, and a byte budget chooses the plan on the validation split.

A plan family (:class:`Shape`) lists tiers from the most to the least important entries, each
with a value dtype (:class:`~shaver.runtime.tiered.TierSpec`) and a share of the kept
entries; its granularity is ``entry`` (the attribution's order of entries) or ``row`` (rows
ordered by the sum of their entries' scores: whole rows kept or pruned, which the ``rows``
layout indexes with one bit per row instead of one per entry). For a budget, each family's
largest kept count that fits is found by binary search on the EXACT bytes (values, index,
scales, codebook; :func:`shaver.runtime.tiered.plan_tiered`); every fitting plan is evaluated
on the validation split as the artifact computes it (:func:`shaver.table.tiers.tiered_copy`)
and the best validation AUC wins. The default families include uniform bits with no pruning
(post-training quantisation), pruning with fp32 values (the paper's Shaver) and pruning with
uniform low bits, so the chosen plan is never worse on validation than any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shaver.errors import ArtifactError, BudgetError
from shaver.runtime.tiered import MAX_TIERS, TierSpec, plan_tiered
from shaver.table.budget import largest_fitting
from shaver.table.order import PruneOrder
from shaver.table.plan import parse_value_dtype
from shaver.table.size import table_bytes

GRANULARITIES = ("entry", "row")


@dataclass(frozen=True)
class Shape:
    """Tiers (most important first), the share of kept entries (or rows) of each, granularity."""

    tiers: tuple[TierSpec, ...]
    shares: tuple[float, ...]
    granularity: str = "entry"

    def __post_init__(self) -> None:
        if not 1 <= len(self.tiers) <= MAX_TIERS or len(self.shares) != len(self.tiers):
            raise BudgetError(f"a plan has 1 to {MAX_TIERS} tiers, each with a share; got "
                              f"{len(self.tiers)} tiers and {len(self.shares)} shares")
        if any(not 0 < s <= 1 for s in self.shares) or abs(sum(self.shares) - 1) > 1e-6:
            raise BudgetError(f"tier shares must be positive and sum to 1, got "
                              f"{list(self.shares)}")
        if self.granularity not in GRANULARITIES:
            raise BudgetError(f"unknown granularity {self.granularity!r}: expected one of "
                              f"{', '.join(GRANULARITIES)}")

    @property
    def label(self) -> str:
        if len(self.tiers) == 1:
            return f"{self.tiers[0].label}/{self.granularity}"
        parts = "+".join(f"{t.label}:{s:g}" for t, s in zip(self.tiers, self.shares))
        return f"{parts}/{self.granularity}"


def parse_tiers(text: str, granularity: str = "entry") -> Shape:
    """``"int8:0.1,int4:0.3,int2:0.6"`` (dtype[/scale]:share, most important first; a single
    tier needs no share) -> :class:`Shape`. Unknown dtypes are refused naming the known ones."""
    tiers, shares = [], []
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    for item in items:
        spec, _, share = item.partition(":")
        try:
            dtype, scale = parse_value_dtype(spec)
        except ArtifactError as exc:
            raise BudgetError(f"--tiers {text!r}: {exc}") from None
        tiers.append(TierSpec(dtype, scale or "field"))
        try:
            shares.append(float(share) if share else (1.0 if len(items) == 1 else float("nan")))
        except ValueError:
            shares.append(float("nan"))
    if not tiers or any(not np.isfinite(s) for s in shares):
        raise BudgetError(f"--tiers {text!r}: expected dtype[/scale]:share items such as "
                          f"int8:0.1,int4:0.3,int2:0.6 (shares positive, summing to 1)")
    return Shape(tuple(tiers), tuple(shares), granularity)


def default_shapes() -> list[Shape]:
    """Uniform bits (fp32 = pruning alone, fp16, int8, int4 and int2 with field or row
    scales) and three mixed families, each at entry and row granularity."""
    uniform = [TierSpec("fp32"), TierSpec("fp16"), TierSpec("int8"), TierSpec("int4"),
               TierSpec("int4", "row"), TierSpec("int2"), TierSpec("int2", "row")]
    mixed = [((TierSpec("int8"), TierSpec("int4")), (0.25, 0.75)),
             ((TierSpec("int4"), TierSpec("int2")), (0.25, 0.75)),
             ((TierSpec("int8"), TierSpec("int4"), TierSpec("int2")), (0.1, 0.3, 0.6))]
    out = []
    for granularity in GRANULARITIES:
        out += [Shape((t,), (1.0,), granularity) for t in uniform]
        out += [Shape(tiers, shares, granularity) for tiers, shares in mixed]
    return out


class TierPlanner:
    """The ranking of entries and rows, sorted once; tier maps and exact bytes of plans.

    scores: (n, d) entry scores (|phi| or signed, per ``order``); field_dims: rows per field.
    """

    def __init__(self, scores: np.ndarray | torch.Tensor, field_dims: Sequence[int],
                 order: str = "abs"):
        prune_order = PruneOrder(scores, order)
        values = np.asarray(scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor)
                            else scores, dtype=np.float64)
        self.shape = prune_order.shape
        self.field_dims = [int(v) for v in field_dims]
        self.entries = prune_order.ranking[::-1].copy()  # most important first
        row_score = np.abs(values).sum(axis=1) if order == "abs" else values.sum(axis=1)
        self.rows = np.argsort(-row_score, kind="stable")

    def units(self, granularity: str) -> int:
        return self.shape[0] * self.shape[1] if granularity == "entry" else self.shape[0]

    def tier_map(self, shape: Shape, kept: int) -> np.ndarray:
        """uint8 (n, d): the ``kept`` most important units split into the shape's tiers."""
        n, d = self.shape
        out = np.zeros(n * d if shape.granularity == "entry" else n, np.uint8)
        order = self.entries if shape.granularity == "entry" else self.rows
        bounds = np.rint(np.cumsum((0.0,) + shape.shares) * kept).astype(np.int64)
        bounds[-1] = kept
        for t in range(len(shape.tiers)):
            out[order[bounds[t]:bounds[t + 1]]] = t + 1
        return out.reshape(n, d) if shape.granularity == "entry" else \
            np.repeat(out[:, None], d, axis=1)

    def table_bytes(self, tier_map: np.ndarray, tiers: Sequence[TierSpec]) -> int:
        """Exact table bytes (values, index, scales, codebook) of a tier map."""
        return table_bytes(plan_tiered(tier_map, self.field_dims, self.shape[1], tiers)[1])

    def fit(self, shape: Shape, fits: Callable[[np.ndarray, Sequence[TierSpec]], bool]
            ) -> tuple[int, np.ndarray] | None:
        """Largest kept count (units) whose plan fits (``fits(tier_map, tiers)``), and its
        tier map; None when not even 0 kept units fit (one binary search:
        :func:`~shaver.table.budget.largest_fitting`)."""
        kept = largest_fitting(self.units(shape.granularity),
                               lambda k: fits(self.tier_map(shape, k), shape.tiers))
        return None if kept is None else (kept, self.tier_map(shape, kept))
