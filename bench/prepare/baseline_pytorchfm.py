"""The baseline: Criteo preparation written the way pytorch-fm's CriteoDataset does it.

rixwew/pytorch-fm (torchfm/dataset/criteo.py) reads train.txt twice with a Python loop per
line: pass 1 counts every field's values (integers through ``convert_numeric_feature``),
keeps those seen at least ``min_threshold`` times; pass 2 builds one uint32 array per line
and ``txn.put``s it into LMDB in buffered batches. This file reproduces that loop; the store
is LMDB when the ``lmdb`` package is importable, else sqlite3 from the standard library
(one BLOB row per line, inserted in batches), and it says which it used.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

NUM_FEATS, NUM_INT_FEATS = 39, 13


@lru_cache(maxsize=None)  # noqa: UP033 - as in pytorch-fm
def convert_numeric_feature(val: str) -> str:
    if val == "":
        return "NULL"
    v = int(val)
    if v > 2:
        return str(int(math.log(v) ** 2))
    return str(v - 2)


def _feat_mapper(path: Path, min_threshold: int):
    feat_cnts = defaultdict(lambda: defaultdict(int))
    with open(path) as f:
        for line in f:
            values = line.rstrip("\n").split("\t")
            if len(values) != NUM_FEATS + 1:
                continue
            for i in range(1, NUM_INT_FEATS + 1):
                feat_cnts[i][convert_numeric_feature(values[i])] += 1
            for i in range(NUM_INT_FEATS + 1, NUM_FEATS + 1):
                feat_cnts[i][values[i]] += 1
    feat_mapper = {i: {feat for feat, c in cnt.items() if c >= min_threshold}
                   for i, cnt in feat_cnts.items()}
    feat_mapper = {i: {feat: idx for idx, feat in enumerate(cnt)} for i, cnt in feat_mapper.items()}
    defaults = {i: len(cnt) for i, cnt in feat_mapper.items()}
    return feat_mapper, defaults


def _rows(path: Path, feat_mapper, defaults, buffer_size: int):
    item_idx = 0
    buffer = []
    with open(path) as f:
        for line in f:
            values = line.rstrip("\n").split("\t")
            if len(values) != NUM_FEATS + 1:
                continue
            np_array = np.zeros(NUM_FEATS + 1, dtype=np.uint32)
            np_array[0] = int(values[0])
            for i in range(1, NUM_INT_FEATS + 1):
                np_array[i] = feat_mapper[i].get(convert_numeric_feature(values[i]), defaults[i])
            for i in range(NUM_INT_FEATS + 1, NUM_FEATS + 1):
                np_array[i] = feat_mapper[i].get(values[i], defaults[i])
            buffer.append((struct.pack(">I", item_idx), np_array.tobytes()))
            item_idx += 1
            if item_idx % buffer_size == 0:
                yield buffer
                buffer.clear()
    yield buffer


def build_cache(path: Path, out: Path, min_threshold: int = 10,
                buffer_size: int = 100_000) -> tuple[int, str]:
    """Prepare ``path`` into ``out`` (a new directory); ``(rows, store name)``."""
    out.mkdir(parents=True)
    feat_mapper, defaults = _feat_mapper(path, min_threshold)
    rows = 0
    try:
        import lmdb
    except ImportError:
        lmdb = None
    if lmdb is not None:
        with lmdb.open(str(out), map_size=int(1e11)) as env:
            with env.begin(write=True) as txn:
                txn.put(b"field_dims", np.array(
                    [len(feat_mapper[i]) + 1 for i in range(1, NUM_FEATS + 1)],
                    dtype=np.uint32).tobytes())
            for buffer in _rows(path, feat_mapper, defaults, buffer_size):
                with env.begin(write=True) as txn:
                    for key, value in buffer:
                        txn.put(key, value)
                rows += len(buffer)
        return rows, "lmdb"
    import sqlite3

    db = sqlite3.connect(out / "cache.sqlite")
    db.execute("CREATE TABLE rows (key BLOB PRIMARY KEY, value BLOB)")
    for buffer in _rows(path, feat_mapper, defaults, buffer_size):
        db.executemany("INSERT INTO rows VALUES (?, ?)", buffer)
        db.commit()
        rows += len(buffer)
    db.close()
    return rows, "sqlite3"
