"""Side tables joined to the main input on a key column (KDD12 user profiles, MovieLens
users and items). A side table is small next to the main input and is held in memory as
a sorted key array (searched with ``np.searchsorted``) plus its coded columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shaver.data.readers import read_table
from shaver.data.spec import InputSpec, JoinSpec
from shaver.data.tokens import MISSING, Coded, code_column


def _as_bytes(col) -> np.ndarray:
    import pyarrow as pa

    arr = col.cast(pa.binary()).to_numpy(zero_copy_only=False)
    return arr.astype("S") if len(arr) else np.zeros(0, dtype="S1")


class SideTable:
    """One joined table: ``lookup`` main-key texts -> row of this table (-1 when absent).
    On duplicate keys the first row in file order wins."""

    def __init__(self, join: JoinSpec, path: Path):
        self.join = join
        self.path = path
        inp = InputSpec(format=join.format, header=join.header, columns=join.columns)
        block = read_table(path, inp, list(join.columns))
        keys = _as_bytes(block.columns[join.table_key])
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        self.columns = {c: code_column(block.columns[c]) for c in join.columns}
        self.rows = len(keys)

    def lookup(self, keys: Coded) -> np.ndarray:
        """int64 (rows,): row of this table for each main row (-1 when the key is absent)."""
        if self.rows == 0:
            return np.full(len(keys.codes), -1, dtype=np.int64)
        q = np.array([v.encode("utf-8") for v in keys.values], dtype="S")
        if len(q) == 0:
            return np.full(len(keys.codes), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, q), self.rows - 1)
        found = self._sorted[pos] == q
        per_value = np.where(found, self._order[pos], -1)
        return per_value[keys.codes]

    def column(self, name: str, rows: np.ndarray) -> Coded:
        """Coded values of column ``name`` at ``rows`` (-1 -> missing)."""
        col = self.columns[name]
        values = [*col.values, MISSING]
        missing = np.int32(len(col.values))
        safe = np.maximum(rows, 0)
        codes = np.where(rows >= 0, col.codes[safe] if len(col.codes) else missing, missing)
        return Coded(values, codes.astype(np.int32, copy=False))
