"""Pruning budgets with explicit units, validated when given and resolved when applied.

Three kinds (the ``kind`` stored in pruned.json):

* ``sparsity``: fraction of embedding entries REPLACED by their placeholder, a float in [0, 1].
  Resolved like ``torch.nn.utils.prune``: ``pruned = round(s * total)``, ``kept = total - pruned``.
* ``params``: number of KEPT embedding entries, an int >= 0 (<= the table size when applied).
* ``bytes``: size of the deployable artifact (``shaver.table.size``), e.g. ``"2MiB"``,
  ``"500KB"``, ``"123456B"``; resolved to the largest kept count whose artifact fits.

The int-vs-float edge follows torch's prune ``amount``: in :meth:`Budget.parse`, ``1`` (int)
keeps one entry while ``1.0`` (float) replaces all of them; strings likewise (``"1"`` vs
``"1.0"``); ``"50%"`` is a sparsity, ``"2MiB"`` a byte budget.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import numpy as np

from shaver.errors import BudgetError

BudgetKind = Literal["sparsity", "params", "bytes"]
KINDS: tuple[str, ...] = ("sparsity", "params", "bytes")
BYTE_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20,
              "gb": 10**9, "gib": 2**30}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?b|b)\s*$", re.IGNORECASE)
_INT_RE = re.compile(r"^\s*\+?\d+\s*$")


@dataclass(frozen=True)
class Budget:
    """One budget: ``kind`` (sparsity | params | bytes) and its ``value``.

    Build with :meth:`sparsity`, :meth:`params`, :meth:`bytes_` or :meth:`parse`; each
    validates its value and raises :class:`~shaver.errors.BudgetError` on a bad one.
    """

    kind: BudgetKind
    value: float | int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BudgetError(f"unknown budget kind {self.kind!r}: expected one of {KINDS}")
        v = self.value
        if self.kind == "sparsity":
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v <= 1:
                raise BudgetError(f"sparsity must be a fraction in [0, 1], got {v!r}")
            object.__setattr__(self, "value", float(v))
        else:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise BudgetError(f"a {self.kind} budget must be an integer, got {v!r}")
            if v < 0 or (self.kind == "bytes" and v == 0):
                least = "> 0" if self.kind == "bytes" else ">= 0"
                raise BudgetError(f"a {self.kind} budget must be {least}, got {v!r}")
            object.__setattr__(self, "value", int(v))

    # -- constructors --------------------------------------------------------------------
    @classmethod
    def sparsity(cls, fraction: float | str) -> Budget:
        """Fraction of entries replaced, in [0, 1] (``"0.95"`` or ``"95%"`` accepted)."""
        if isinstance(fraction, str):
            fraction = _parse_fraction(fraction)
        return cls("sparsity", fraction)

    @classmethod
    def params(cls, kept: int | str) -> Budget:
        """Number of kept entries: an integer (``"1.0"`` is refused: that is a sparsity)."""
        if isinstance(kept, str):
            if not _INT_RE.match(kept):
                raise BudgetError(f"a params budget is an integer count of kept entries, "
                                  f"got {kept!r}")
            kept = int(kept)
        return cls("params", kept)

    @classmethod
    def bytes_(cls, size: int | str) -> Budget:
        """Artifact bytes: an int, or ``"<number><unit>"`` with unit B, KB, KiB, MB, MiB, GB,
        GiB (KB = 1000, KiB = 1024; case-insensitive); a bare integer string means bytes."""
        if isinstance(size, str):
            size = parse_bytes(size)
        return cls("bytes", size)

    @classmethod
    def parse(cls, spec: Budget | float | int | str) -> Budget:
        """Budget from a value whose type says its unit (see the module docstring)."""
        if isinstance(spec, Budget):
            return spec
        if isinstance(spec, bool):
            raise BudgetError(f"a budget cannot be a bool, got {spec!r}")
        if isinstance(spec, numbers.Integral):
            return cls.params(int(spec))
        if isinstance(spec, numbers.Real):
            return cls.sparsity(float(spec))
        if not isinstance(spec, str):
            raise BudgetError(f"cannot read a budget from {type(spec).__name__} {spec!r}")
        text = spec.strip()
        kind, sep, rest = text.partition("=")
        if sep:
            makers: dict[str, Callable[[str], Budget]] = {
                "sparsity": cls.sparsity, "params": cls.params, "bytes": cls.bytes_}
            if kind.strip() not in makers:
                raise BudgetError(f"unknown budget kind {kind.strip()!r} in {spec!r}: "
                                  f"expected one of {', '.join(KINDS)}")
            return makers[kind.strip()](rest)
        if _BYTES_RE.match(text):
            return cls.bytes_(text)
        if _INT_RE.match(text):
            return cls.params(text)
        return cls.sparsity(text)

    # -- views ---------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """Short human label, also a valid :meth:`parse` input: ``sparsity=0.95``."""
        value = f"{self.value:g}" if self.kind == "sparsity" else str(self.value)
        return f"{self.kind}={value}"

    def to_json(self) -> dict[str, Any]:
        """``{"kind", "value", "label"}`` as stored in pruned.json."""
        return {"kind": self.kind, "value": self.value, "label": self.label}

    def kept_entries(self, total: int) -> int:
        """Kept entries for a table of ``total`` entries (sparsity and params budgets only)."""
        if self.kind == "sparsity":
            return total - int(round(self.value * total))
        if self.kind == "params":
            if self.value > total:
                raise BudgetError(f"budget {self.label} keeps more entries than the table "
                                  f"holds ({total})")
            return int(self.value)
        raise BudgetError("a bytes budget is resolved with resolve_bytes (it needs the model)")


def _parse_fraction(text: str) -> float:
    raw = text.strip()
    scale = 1.0
    if raw.endswith("%"):
        raw, scale = raw[:-1], 0.01
    try:
        value = float(raw) * scale
    except ValueError:
        raise BudgetError(f"cannot read a sparsity from {text!r}: expected a fraction in "
                          f"[0, 1] such as 0.95, or a percentage such as 95%") from None
    if not math.isfinite(value):
        raise BudgetError(f"sparsity must be a fraction in [0, 1], got {text!r}")
    return value


def parse_bytes(text: str) -> int:
    """``"2MiB"`` -> 2097152; ``"500KB"`` -> 500000; ``"123456"`` -> 123456 (floor)."""
    match = _BYTES_RE.match(text)
    if match is None and _INT_RE.match(text):
        return int(text)
    if match is None:
        raise BudgetError(f"cannot read a byte size from {text!r}: expected e.g. 2MiB, 500KB, "
                          f"123456B (units {', '.join(u.upper() for u in BYTE_UNITS)})")
    number, unit = match.groups()  # the regex admits only plain decimals
    return int(Decimal(number) * BYTE_UNITS[unit.lower()])


def parse_budget_list(text: str, kind: str) -> list[Budget]:
    """CLI lists: ``"0.5,0.8"`` with kind ``sparsity`` -> two Budgets (units from ``kind``)."""
    makers = {"sparsity": Budget.sparsity, "params": Budget.params, "bytes": Budget.bytes_}
    items = [t for t in (s.strip() for s in text.split(",")) if t]
    if not items:
        raise BudgetError(f"empty {kind} budget list {text!r}")
    return [makers[kind](t) for t in items]


def as_budgets(budgets: Budget | float | int | str | Iterable[Any]) -> list[Budget]:
    """One budget or many (any mix accepted by :meth:`Budget.parse`) -> list of Budgets."""
    if isinstance(budgets, (Budget, str, numbers.Number)):
        return [Budget.parse(budgets)]
    out = [Budget.parse(b) for b in budgets]
    if not out:
        raise BudgetError("no budget given")
    return out


def resolve_bytes(
    budget: Budget,
    size_of: Callable[[np.ndarray], int],
    mask_for: Callable[[int], np.ndarray],
    total: int,
) -> int:
    """Largest kept count K whose artifact ``size_of(mask_for(K))`` fits ``budget`` bytes.

    Binary search over K in [0, total] keeping ``size(lo) <= limit < size(hi)``, so the
    result always fits (and is the largest fitting cut when the size grows with K, as it
    does for any table of realistic size). A budget under both the all-pruned and the
    all-kept artifact raises :class:`BudgetError` stating the minimum.
    """
    limit = int(budget.value)
    full = size_of(mask_for(total))
    if full <= limit:
        return total
    empty = size_of(mask_for(0))
    if empty > limit:
        minimum = min(empty, full)
        raise BudgetError(
            f"budget {budget.label} is below this model's minimum artifact size of {minimum} "
            f"bytes ({minimum / 2**20:.3f} MiB: dense head, first-order weights, codebook and "
            f"index with every embedding entry pruned)"
        )
    lo, hi = 0, total  # size(lo) fits, size(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size_of(mask_for(mid)) <= limit:
            lo = mid
        else:
            hi = mid
    return lo
