"""Raw text -> tokens, per field: discretisers, derived fields, labels, split keys.

Work is done on the distinct values of a block (a block holds up to millions of rows but
far fewer distinct values): a column becomes ``Coded(values, codes)`` where ``values`` are
the distinct texts and ``codes`` int32 (rows,) index them; a transform maps ``values`` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from shaver.data.numbers import MISSING, BadValue, parsed
from shaver.data.spec import FieldSpec, LabelSpec
from shaver.data.times import TIME_DERIVATIONS, time_tokens


class Coded:
    """A column as distinct values and codes: ``values`` the tokens (list of str; may
    repeat after a transform unless ``distinct``), ``codes`` int32 (rows,) index into
    ``values``. ``values`` may be given as a pyarrow string array (the dictionary of a
    column), turned into a list only when a transform asks for it."""

    def __init__(self, values: Any, codes: np.ndarray, distinct: bool = False):
        self._values = values
        self.codes = codes
        self.distinct = distinct

    @property
    def values(self) -> list[str]:
        if not isinstance(self._values, list):
            self._values = self._values.to_pylist()
        return self._values

    def strings(self) -> Any:
        """The values as a pyarrow string array."""
        if isinstance(self._values, list):
            import pyarrow as pa

            return pa.array(self._values, type=pa.string())
        return self._values

    def take(self, rows: np.ndarray) -> Coded:
        return Coded(self._values, self.codes[rows], self.distinct)


def code_column(col: Any) -> Coded:
    """pyarrow string or binary array, or chunked array (rows,) -> :class:`Coded` (the
    distinct values kept as a pyarrow string array). Binary input is checked to be UTF-8
    on its distinct values only (raises ``pyarrow.ArrowInvalid`` otherwise)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(col)
    if isinstance(enc, pa.ChunkedArray):  # chunks share one growing dictionary
        chunks = enc.chunks
        dictionary = chunks[-1].dictionary if chunks else pa.array([], pa.string())
        codes = (np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks])
                 if chunks else np.zeros(0, np.int32))
    else:
        dictionary, codes = enc.dictionary, enc.indices.to_numpy(zero_copy_only=False)
    if not pa.types.is_string(dictionary.type):
        dictionary = _checked_utf8(dictionary)
    return Coded(dictionary, codes.astype(np.int32, copy=False), distinct=True)


def _checked_utf8(binary: Any) -> Any:
    """A binary array as a string array: zero-copy when every byte is ASCII, else a cast
    that checks UTF-8 (raises ``pyarrow.ArrowInvalid``)."""
    import pyarrow as pa

    _, data_buf = binary.buffers()[1:3]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else None
    if binary.offset == 0 and (data is None or len(data) == 0 or int(data.max()) < 0x80):
        return binary.view(pa.string())
    return binary.cast(pa.string())


# -- numeric discretisers -------------------------------------------------------------------
def criteo_token(v: int | None) -> str:
    """Criteo's integer discretiser: v > 2 -> "L" + int(ln(v)^2), else the value itself.
    The "L" keeps the two ranges apart (the bare formula maps 2 and 5 alike)."""
    if v is None:
        return MISSING
    return f"L{int(math.log(v) ** 2)}" if v > 2 else str(v)


def log2_token(x: float | None) -> str:
    """x >= 1 -> "L" + floor(log2(x)); smaller values -> floor(x) as text."""
    if x is None:
        return MISSING
    return f"L{math.floor(math.log2(x))}" if x >= 1 else str(math.floor(x))


def quantile_token(x: float | None, edges: np.ndarray) -> str:
    if x is None:
        return MISSING
    return f"Q{int(np.searchsorted(edges, x, side='right'))}"


def quantile_vocab(edges: np.ndarray) -> list[str]:
    return [MISSING] + [f"Q{k}" for k in range(len(edges) + 1)]


# -- derived fields -------------------------------------------------------------------------
def derive(kind: str, values: list[str], fmt: str | None = None) -> list[str]:
    """Tokens of a derived field from the distinct texts of its column; ``fmt`` is the time
    format of ``hour_of_day`` / ``weekday`` (see :mod:`shaver.data.times`)."""
    if kind in TIME_DERIVATIONS:
        return time_tokens(kind, fmt, values)
    if kind == "first_token":
        return [v.split(" ", 1)[0] for v in values]
    if kind == "libfm_index":
        return [v.split(":", 1)[0] for v in values]
    raise ValueError(f"unknown derivation {kind!r}")  # unreachable: the spec validates kinds


def distinct_texts(codes: np.ndarray, fmt: Callable[[int], str] | None = None
                   ) -> tuple[list[str], np.ndarray]:
    """``(texts, inverse)``: the token text of each distinct code (formatted once) and
    int32 (len(codes),) the index of each code's text."""
    distinct, inverse = np.unique(codes, return_inverse=True)
    texts = [(fmt or _code_text)(int(c)) for c in distinct]
    return texts, inverse.reshape(-1).astype(np.int32)


def _texts_of_codes(codes: np.ndarray, fmt: Callable[[int], str]) -> list[str]:
    """Token texts for an int array of codes, formatting each distinct code once."""
    texts, inverse = distinct_texts(codes, fmt)
    return np.array(texts, dtype=object)[inverse].tolist()


MISSING_CODE = -(2**62)
LOG_CODE = 2**40  # codes >= LOG_CODE stand for "L" + (code - LOG_CODE)


def _code_text(code: int) -> str:
    if code == MISSING_CODE:
        return MISSING
    return f"L{code - LOG_CODE}" if code >= LOG_CODE else str(code)


def criteo_codes(values: Any) -> np.ndarray:
    """int64 token codes (see :func:`distinct_texts`) of :func:`criteo_token` over distinct
    texts (a list or a pyarrow string array; raises :class:`BadValue`)."""
    v, missing = parsed(values, integer=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.floor(np.log(np.maximum(v, 1).astype(np.float64)) ** 2).astype(np.int64)
    codes = np.where(v > 2, logs + LOG_CODE, v)
    return np.where(missing, MISSING_CODE, codes)


def log2_codes(values: list[str]) -> np.ndarray:
    """int64 token codes of :func:`log2_token` over distinct texts."""
    x, missing = parsed(values, integer=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.floor(np.log2(np.where(x >= 1, x, 1.0))).astype(np.int64)
        small = np.floor(np.where(x < 1, x, 0.0))
    small = np.clip(small, -(2**39), 2**39).astype(np.int64)
    codes = np.where(x >= 1, logs + LOG_CODE, small)
    return np.where(missing, MISSING_CODE, codes)


def criteo_tokens(values: list[str]) -> list[str]:
    """Vectorised :func:`criteo_token` over distinct texts (raises :class:`BadValue`)."""
    return _texts_of_codes(criteo_codes(values), _code_text)


def log2_tokens(values: list[str]) -> list[str]:
    """Vectorised :func:`log2_token` over distinct texts."""
    return _texts_of_codes(log2_codes(values), _code_text)


def quantile_tokens(values: list[str], edges: np.ndarray) -> list[str]:
    x, missing = parsed(values, integer=False)
    bins = np.searchsorted(edges, x, side="right")
    codes = np.where(missing, MISSING_CODE, bins)
    return _texts_of_codes(codes, lambda c: MISSING if c == MISSING_CODE else f"Q{c}")


def field_tokens(f: FieldSpec, values: list[str], edges: np.ndarray | None = None) -> list[str]:
    """Tokens of field ``f`` for its column's distinct texts (raises :class:`BadValue`)."""
    if f.derive is not None:
        values = derive(f.derive, values, f.format)
    if f.kind == "categorical":
        return values
    if f.discretiser == "criteo":
        return criteo_tokens(values)
    if f.discretiser == "log2":
        return log2_tokens(values)
    assert edges is not None, "quantile edges are computed before tokens"
    return quantile_tokens(values, edges)


def numeric_sample(values: list[str]) -> np.ndarray:
    """float64 (distinct,) numbers of a quantile field's distinct texts (NaN = missing)."""
    x, missing = parsed(values, integer=False)
    return np.where(missing, np.nan, x)


# -- labels and split keys ------------------------------------------------------------------
def label_values(spec: LabelSpec, values: list[str]) -> np.ndarray:
    """float32 (distinct,) 0/1 labels of the label column's distinct texts."""
    out = np.zeros(len(values), dtype=np.float32)
    for i, v in enumerate(values):
        if spec.rule == "binary":
            if v not in ("0", "1"):
                raise BadValue(i, f"label {v!r} is not 0 or 1")
            out[i] = float(v)
        elif spec.rule == "positive":
            if not v.isdigit():
                raise BadValue(i, f"label {v!r} is not a non-negative integer count")
            out[i] = float(int(v) > 0)
        else:
            try:
                out[i] = float(float(v) >= spec.threshold)
            except ValueError:
                raise BadValue(i, f"label {v!r} is not a number") from None
    return out


def _cmp_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


def split_by_value(values: list[str], val_from: str, test_from: str) -> np.ndarray:
    """int8 (distinct,): 2 when value >= test_from, 1 when >= val_from, else 0.
    Compared as numbers when both sides are numbers, as text otherwise."""
    def ge(a: str, b: str) -> bool:
        ka, kb = _cmp_key(a), _cmp_key(b)
        return ka >= kb if ka[0] == kb[0] else a >= b

    return np.array([2 if ge(v, test_from) else 1 if ge(v, val_from) else 0 for v in values],
                    dtype=np.int8)
