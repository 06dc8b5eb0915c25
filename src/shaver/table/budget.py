"""Budgets with explicit units, validated when given and resolved when applied: THE budget
type of every door (CLI flags, the Python API, fleet files, the benchmark).

Four kinds (the ``kind`` stored in pruned.json and artifacts):

* ``sparsity``: fraction of embedding entries REPLACED by their placeholder, a float in [0, 1].
  Resolved like ``torch.nn.utils.prune``: ``pruned = round(s * total)``, ``kept = total - pruned``.
* ``params``: number of KEPT embedding entries, an int >= 0 (<= the table size when applied).
* ``bytes``: size of the whole deployable artifact file (``shaver.table.size``), e.g.
  ``"2MiB"``, ``"500KB"``, ``"123456B"``.
* ``table_bytes``: size of the embedding table in that artifact (kept values, index, scales,
  codebook): a byte size, or a fraction ``"1/16"`` of the table stored densely in fp32
  (n x d x 4 bytes), resolved against the model's table when applied.

The int-vs-float edge follows torch's prune ``amount``: in :meth:`Budget.parse`, ``1`` (int)
keeps one entry while ``1.0`` (float) replaces all of them; strings likewise (``"1"`` vs
``"1.0"``); ``"50%"`` is a sparsity, ``"2MiB"`` artifact bytes, ``"1/16"`` table bytes, and
``kind=value`` names the kind (``table_bytes=40KiB``). Every :attr:`Budget.label` parses back
to the same budget.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from shaver.errors import BudgetError

BudgetKind = Literal["sparsity", "params", "bytes", "table_bytes"]
KINDS: tuple[str, ...] = ("sparsity", "params", "bytes", "table_bytes")
#: Kinds resolved by the size oracle (the others fix the kept-entry count).
BYTE_KINDS: tuple[str, ...] = ("bytes", "table_bytes")
BYTE_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20,
              "gb": 10**9, "gib": 2**30}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?b|b)\s*$", re.IGNORECASE)
_INT_RE = re.compile(r"^\s*\+?\d+\s*$")
_FRACTION_RE = re.compile(r"^\s*1\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Budget:
    """One budget: ``kind`` (sparsity | params | bytes | table_bytes) and its ``value``
    (a table-byte budget's value is an int, or a :class:`~fractions.Fraction` 1/N of the
    fp32 table).

    Build with :meth:`sparsity`, :meth:`params`, :meth:`bytes_`, :meth:`table_bytes` or
    :meth:`parse`; each validates its value and raises :class:`~shaver.errors.BudgetError`
    on a bad one.
    """

    kind: BudgetKind
    value: float | int | Fraction

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BudgetError(f"unknown budget kind {self.kind!r}: expected one of {KINDS}")
        v = self.value
        if self.kind == "table_bytes" and isinstance(v, Fraction):
            if v.numerator != 1 or v.denominator < 1:
                raise BudgetError(f"a table budget fraction is 1/N with N >= 1, got {v}")
            return
        if self.kind == "sparsity":
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v <= 1:
                raise BudgetError(f"sparsity must be a fraction in [0, 1], got {v!r}")
            object.__setattr__(self, "value", float(v))
        else:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise BudgetError(f"a {self.kind} budget must be an integer, got {v!r}")
            if v < 0 or (self.kind in BYTE_KINDS and v == 0):
                least = "> 0" if self.kind in BYTE_KINDS else ">= 0"
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
    def table_bytes(cls, size: int | str | Fraction) -> Budget:
        """Table bytes: an int, a size such as ``"40KiB"``, or ``"1/16"`` (a fraction of the
        table stored densely in fp32, resolved by :meth:`byte_limit`)."""
        if isinstance(size, str):
            match = _FRACTION_RE.match(size)
            if match:
                if int(match.group(1)) == 0:
                    raise BudgetError(f"table budget {size!r}: 1/0 is not a fraction")
                return cls("table_bytes", Fraction(1, int(match.group(1))))
            size = parse_bytes(size)
        return cls("table_bytes", size)

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
            makers = _makers()
            if kind.strip() not in makers:
                raise BudgetError(f"unknown budget kind {kind.strip()!r} in {spec!r}: "
                                  f"expected one of {', '.join(KINDS)}")
            return makers[kind.strip()](rest)
        if _FRACTION_RE.match(text):
            return cls.table_bytes(text)
        if _BYTES_RE.match(text):
            return cls.bytes_(text)
        if _INT_RE.match(text):
            return cls.params(text)
        return cls.sparsity(text)

    # -- views ---------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """Short human label, also a valid :meth:`parse` input: ``sparsity=0.95``."""
        return f"{self.kind}={_value_text(self.value)}"

    @property
    def is_bytes(self) -> bool:
        """Whether the size oracle resolves this budget (bytes, table_bytes)."""
        return self.kind in BYTE_KINDS

    def byte_limit(self, fp32_table_bytes: int) -> int:
        """Bytes allowed by a byte budget; a fraction 1/N takes ``fp32_table_bytes / N``."""
        if not self.is_bytes:
            raise BudgetError(f"budget {self.label} is not a byte budget")
        if isinstance(self.value, Fraction):
            return int(Fraction(int(fp32_table_bytes)) * self.value)
        return int(self.value)

    def to_json(self) -> dict[str, Any]:
        """``{"kind", "value", "label"}`` as stored in pruned.json (a fraction's value is its
        label text, ``"1/16"``)."""
        value = _value_text(self.value) if isinstance(self.value, Fraction) else self.value
        return {"kind": self.kind, "value": value, "label": self.label}

    def kept_entries(self, total: int) -> int:
        """Kept entries for a table of ``total`` entries (sparsity and params budgets only)."""
        if self.kind == "sparsity":
            return total - int(round(self.value * total))
        if self.kind == "params":
            if self.value > total:
                raise BudgetError(f"budget {self.label} keeps more entries than the table "
                                  f"holds ({total})")
            return int(self.value)
        raise BudgetError(f"budget {self.label} is resolved by the size oracle (it needs the "
                          f"model), not by a kept-entry count")


def _value_text(value: float | int | Fraction) -> str:
    """A budget value as its label writes it: ``0.95``, ``12000``, ``1/16`` (``1/1`` too: a
    bare ``1`` would read back as one byte); a float in the shortest form that reads back."""
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


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


def _makers() -> dict[str, Callable[[Any], Budget]]:
    return {"sparsity": Budget.sparsity, "params": Budget.params, "bytes": Budget.bytes_,
            "table_bytes": Budget.table_bytes}


def parse_budget_list(text: str, kind: str) -> list[Budget]:
    """CLI lists: ``"0.5,0.8"`` with kind ``sparsity`` -> two Budgets (units from ``kind``)."""
    makers = _makers()
    if kind not in makers:
        raise BudgetError(f"unknown budget kind {kind!r}: expected one of {', '.join(KINDS)}")
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


def largest_fitting(total: int, fits: Callable[[int], bool]) -> int | None:
    """THE binary search of a byte budget: the largest K in [0, total] with ``fits(K)``, or
    None when not even K = 0 fits.

    Keeps ``fits(lo)`` and ``not fits(hi)``, so the result always fits, and is the largest
    fitting K when sizes grow with K (as they do for any table of realistic size).
    """
    if fits(total):
        return total
    if not fits(0):
        return None
    lo, hi = 0, total
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
