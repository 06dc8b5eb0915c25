"""Numbers of distinct texts: numpy parses a block's distinct values in one call; the
per-value Python parser only runs to name the value numpy refuses (:class:`BadValue`)."""

from __future__ import annotations

from typing import Any

import numpy as np

MISSING = ""


class BadValue(ValueError):
    """A distinct value (``index`` into ``Coded.values``) that a transform rejects."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index
        self.message = message


def _raise_first_bad(values: list[str], integer: bool) -> None:
    """Raise :class:`BadValue` for the first text Python's ``int`` / ``float`` rejects;
    return if there is none."""
    for i, v in enumerate(values):
        if v == MISSING:
            continue
        try:
            int(v) if integer else float(v)
        except ValueError:
            what = "an integer" if integer else "a number"
            raise BadValue(i, f"{v!r} is not {what}") from None


_POW10 = 10 ** np.arange(17, -1, -1, dtype=np.int64)


def _plain_ints(values: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(numbers, missing)`` of a pyarrow string array whose texts are all empty or plain
    decimal integers (an optional sign and 1 to 18 digits: what Python's ``int`` reads the
    same way), parsed in numpy; None when some text is anything else."""
    from shaver.data.strtable import arrow_strings

    offsets, data = arrow_strings(values)
    lens = np.diff(offsets)
    if len(lens) == 0 or int(lens.max()) > 19:
        return None
    padded = np.zeros(len(data) + 1, dtype=np.uint8)
    padded[:len(data)] = data
    first = np.where(lens > 0, padded[offsets[:-1]], 0)
    signed = (first == ord("-")) | (first == ord("+"))
    digits = lens - signed
    if int(digits.max()) > 18 or bool(((lens > 0) & (digits == 0)).any()):
        return None
    width = max(1, int(digits.max()))  # digits right-aligned in (n, width)
    at = np.maximum(offsets[1:, None] - width + np.arange(width), 0)
    inside = np.arange(width) >= (width - digits)[:, None]
    chars = np.where(inside, padded[at], ord("0")).astype(np.int64) - 48
    if bool(((chars < 0) | (chars > 9)).any()):
        return None
    numbers = chars @ _POW10[-width:]
    return np.where(first == ord("-"), -numbers, numbers), lens == 0


def parsed(values: Any, integer: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(numbers, missing)`` of distinct texts (a list, or for integers also a pyarrow
    string array: plain integers are parsed from its bytes), parsed by numpy in one call;
    the per-value Python parser only runs to find the offending value when numpy refuses
    one."""
    if not isinstance(values, list):
        fast = _plain_ints(values) if integer else None
        if fast is not None:
            return fast
        values = values.to_pylist()
    text = np.array(values, dtype=str) if values else np.zeros(0, dtype="U1")
    missing = text == MISSING
    kind = np.int64 if integer else np.float64
    try:
        numbers = np.where(missing, "0", text).astype(kind)
    except (ValueError, OverflowError):
        _raise_first_bad(values, integer)
        for i, v in enumerate(values):  # Python accepted them all: one is out of range
            if v == MISSING:
                continue
            try:
                np.array([v]).astype(kind)
            except (ValueError, OverflowError):
                raise BadValue(i, f"{v!r} is out of the 64-bit range") from None
        raise  # pragma: no cover - numpy refused the array but no single value
    if not integer:
        missing |= np.isnan(numbers)
        infinite = np.flatnonzero(np.isinf(numbers))
        if len(infinite):
            i = int(infinite[0])
            raise BadValue(i, f"{values[i]!r} is not a finite number")
    return numbers, missing
