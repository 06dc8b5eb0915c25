"""The candidates of a budget: rankings x plan families x head precisions.

:func:`candidates_for` is the default set the chooser (:mod:`shaver.pruning.chooser`) fits
and scores: a kept-entry budget (sparsity, params) keeps its entries in fp32 (or the one value
dtype allowed) with an fp32 head; a byte budget tries every ranking at the uniform precisions
and the paper's ranking at every default family (mixed tiers, whole rows), each at every head
precision the budget allows (a table budget does not count the head: fp32). ``values`` /
``heads`` restrict them (a fleet class that states its precisions); ``families`` names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shaver.errors import ShaverError
from shaver.runtime.headq import HEAD_DTYPES, check_head_dtype
from shaver.runtime.tiered import TierSpec
from shaver.table.budget import Budget
from shaver.table.families import Shape, default_shapes

FP32 = Shape((TierSpec("fp32"),), (1.0,))
#: Uniform precisions every ranking is tried at under a byte budget.
UNIFORM = ("fp32", "fp16", "int8", "int4", "int2")


class ChooserError(ShaverError):
    """The chooser cannot serve a request (no validation split, nothing allowed fits)."""


@dataclass(frozen=True)
class Candidate:
    """One way to cut: ``ranking`` (a name), ``family`` (tiers, shares, granularity),
    ``head`` (fp32 | fp16 | int8)."""

    ranking: str
    family: Shape
    head: str = "fp32"

    @property
    def name(self) -> str:
        plan = "" if self.family == FP32 else f" {self.family.label}"
        head = "" if self.head == "fp32" else f" head={self.head}"
        return f"{self.ranking}{plan}{head}"


def candidates_for(budget: Budget, rankings: Sequence[str], *,
                   values: Sequence[str] | None = None, heads: Sequence[str] | None = None,
                   families: Sequence[Shape] | None = None) -> list[Candidate]:
    """The default candidates of ``budget`` over ``rankings`` (the first is the paper's),
    restricted to the value dtypes ``values`` and head dtypes ``heads`` when given, or to
    the plan ``families`` when given."""
    if families is None:
        families = _families(budget, rankings, values)
    else:
        families = [(r, f) for r in rankings for f in families]
    if heads is None:
        heads = HEAD_DTYPES if budget.kind == "bytes" else ("fp32",)
    for head in heads:
        check_head_dtype(head)
    out = [Candidate(r, f, h) for h in heads for r, f in families]
    if not out:
        raise ChooserError(f"no plan family allows the value dtypes {', '.join(values or ())}"
                           f" for budget {budget.label}")
    return out


def _families(budget: Budget, rankings: Sequence[str],
              values: Sequence[str] | None) -> list[tuple[str, Shape]]:
    def allowed(shape: Shape) -> bool:
        return values is None or all(t.value_dtype in values for t in shape.tiers)

    if not budget.is_bytes:
        dtypes = ("fp32",) if values is None else tuple(values)
        uniform = [Shape((TierSpec(v),), (1.0,)) for v in dtypes]
        return [(r, s) for r in rankings for s in uniform]
    uniform = [Shape((TierSpec(v),), (1.0,)) for v in UNIFORM]
    out = [(r, s) for r in rankings for s in uniform if allowed(s)]
    out += [(rankings[0], s) for s in default_shapes() if allowed(s) and s not in uniform]
    return out
