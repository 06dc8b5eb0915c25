"""Time derivations (``hour_of_day``, ``weekday``) of a column's distinct texts, by format.

Formats (a field's ``format``; ``avazu`` when absent):

* ``avazu``: YYMMDDHH, the year 20YY (Avazu's ``hour`` column).
* ``iso``: ISO 8601 as Arrow reads it: ``2017-11-07``, ``2017-11-07 09:30``,
  ``2017-11-07T09:30:38``, ``2017-11-07T09:30:38.25``, optionally with a zone (``Z``,
  ``+08``, ``+0800``, ``+08:00``).
* ``epoch``: seconds since 1970-01-01 UTC (decimals allowed); ``epoch_ms``: milliseconds.
* a strptime pattern (any text with a ``%``), e.g. ``%d/%m/%Y %H:%M``, read by Arrow's
  ``strptime``; ``%z`` reads a zone.

The zone of hour and weekday: a time written without a zone is taken as written (its local
clock); a time with a zone, and every epoch time, is converted to UTC. Weekday: Monday 0 to
Sunday 6. The empty text (missing) stays missing.

Parsing is vectorised with pyarrow (``cast`` to timestamp, ``strptime``); a text that does
not parse is found by bisection (each half cast again) and raised as :class:`BadValue`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from shaver.data.numbers import MISSING, BadValue

TIME_DERIVATIONS = ("hour_of_day", "weekday")
TIME_FORMATS = ("avazu", "iso", "epoch", "epoch_ms")
DEFAULT_FORMAT = "avazu"
_EPOCH_MAX_S = 253_402_300_799  # 9999-12-31T23:59:59Z
_ZONED = r"^[^T ]+[T ].*(Z|[+-]\d\d(:?\d\d)?)$"  # a zone after a time part
_NUMERALS = np.array([str(i) for i in range(24)], dtype=object)  # hours 0-23, weekdays 0-6


def check_time_format(fmt: Any) -> str | None:
    """``fmt`` if it names a time format (one of :data:`TIME_FORMATS` or a strptime pattern
    with a ``%``), else None."""
    if isinstance(fmt, str) and (fmt in TIME_FORMATS or "%" in fmt):
        return fmt
    return None


def time_tokens(kind: str, fmt: str | None, values: list[str]) -> list[str]:
    """Tokens of ``hour_of_day`` / ``weekday`` (decimal text) for distinct texts in format
    ``fmt`` (None: ``avazu``); raises :class:`BadValue` naming the first text that does not
    parse."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fmt = fmt or DEFAULT_FORMAT
    texts = pa.array(values, type=pa.string())
    present = np.flatnonzero(np.asarray(pc.not_equal(texts, MISSING)))
    if len(present) == 0:
        return list(values)
    part = texts if len(present) == len(texts) else texts.take(pa.array(present))
    numbers = np.zeros(len(present), dtype=np.int64)
    if fmt == "iso":
        zoned = np.asarray(pc.match_substring_regex(part, _ZONED), dtype=bool)
        errors = []
        for mask, tz in ((~zoned, None), (zoned, "UTC")):
            rows = np.flatnonzero(mask)
            try:
                stamps = _parsed(part, rows, present, fmt,
                                 lambda a, tz=tz: a.cast(pa.timestamp("us", tz)))
            except BadValue as exc:
                errors.append(exc)
                continue
            numbers[rows] = _field_of(kind, stamps)
        if errors:
            raise min(errors, key=lambda exc: exc.index)
    elif fmt in ("epoch", "epoch_ms"):
        numbers[:] = _field_of(kind, _epoch_stamps(part, present, fmt))
    else:
        pattern = "%Y%m%d%H" if fmt == "avazu" else fmt
        rows = np.arange(len(present))
        stamps = _parsed(part, rows, present, fmt, lambda a: _strptime(a, pattern, fmt))
        numbers[:] = _field_of(kind, stamps)
    out = np.full(len(values), MISSING, dtype=object)
    out[present] = _NUMERALS[numbers]
    return out.tolist()


def _field_of(kind: str, stamps: Any) -> np.ndarray:
    import pyarrow.compute as pc

    field = pc.hour(stamps) if kind == "hour_of_day" else pc.day_of_week(stamps)
    return np.asarray(field, dtype=np.int64)


_DESCRIPTIONS = {"avazu": "a YYMMDDHH time", "iso": "an ISO 8601 time",
                 "epoch": "epoch seconds", "epoch_ms": "epoch milliseconds"}


def _bad(index: int, text: str, fmt: str, why: str = "") -> BadValue:
    if fmt in _DESCRIPTIONS:
        return BadValue(index, f"{text!r} is not {_DESCRIPTIONS[fmt]} (format {fmt}{why})")
    return BadValue(index, f"{text!r} does not match the time format {fmt!r}")


def _parsed(part: Any, rows: np.ndarray, present: np.ndarray, fmt: str,
            convert: Callable[[Any], Any]) -> Any:
    """``convert`` (raises ``pyarrow.ArrowInvalid``) of ``part[rows]``; on failure the
    first text it refuses, found by bisection, is raised as :class:`BadValue`."""
    import pyarrow as pa

    subset = part if len(rows) == len(part) else part.take(pa.array(rows, type=pa.int64()))
    try:
        return convert(subset)
    except pa.ArrowInvalid:
        lo, hi = 0, len(subset)  # invariant: convert(subset[lo:hi]) fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                convert(subset.slice(lo, mid - lo))
                lo = mid
            except pa.ArrowInvalid:
                hi = mid
        raise _bad(int(present[rows[lo]]), subset[lo].as_py(), fmt) from None


def _strptime(texts: Any, pattern: str, fmt: str) -> Any:
    """``strptime`` that raises ``ArrowInvalid`` on a text it refuses; for ``avazu`` the
    text must be 8 digits naming a real hour (strptime alone rolls 30 February over to
    March: the parsed month, day and hour must be the digits')."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if fmt == "avazu":
        if not pc.all(pc.equal(pc.utf8_length(texts), 8), min_count=0).as_py():
            raise pa.ArrowInvalid("not 8 characters")
        digits = np.asarray(texts.cast(pa.int64()))  # a sign passes here, not strptime
        texts = pc.binary_join_element_wise("20", texts, "")
    stamps = pc.strptime(texts, format=pattern, unit="s", error_is_null=True)
    if stamps.null_count:
        raise pa.ArrowInvalid("does not parse")
    if fmt == "avazu":
        parts = [np.asarray(f(stamps)) for f in (pc.month, pc.day, pc.hour)]
        written = parts[0] * 10_000 + parts[1] * 100 + parts[2]
        if not np.array_equal(written, digits % 1_000_000):
            raise pa.ArrowInvalid("not a real hour")
    return stamps


def _epoch_stamps(part: Any, present: np.ndarray, fmt: str) -> Any:
    import pyarrow as pa

    rows = np.arange(len(part))
    numbers = _parsed(part, rows, present, fmt, lambda a: a.cast(pa.float64()))
    x = np.asarray(numbers, dtype=np.float64)
    seconds = x / 1000.0 if fmt == "epoch_ms" else x
    wrong = np.flatnonzero(~(np.abs(seconds) <= _EPOCH_MAX_S))  # NaN and inf too
    if len(wrong):
        i = int(wrong[0])
        hint = "; milliseconds? use format epoch_ms" if fmt == "epoch" else ""
        why = f": past the year 9999{hint}" if np.isfinite(x[i]) else ": not finite"
        raise _bad(int(present[i]), part[i].as_py(), fmt, why)
    whole = np.floor(seconds).astype(np.int64)
    return pa.array(whole, type=pa.int64()).cast(pa.timestamp("s", "UTC"))
