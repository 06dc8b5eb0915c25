"""The temporary binary file between the two passes, and the encode pass that reads it.

Pass 1 appends, per block, the provisional ids (int32 (rows, single-valued fields)), labels,
split ids and raw line numbers of its rows to four files; and per list field (bag) the
rows' list lengths (int32), their values' provisional ids (int32) and, for a weighted bag,
their weights (float32) to three more. Pass 2 streams them back in chunks, maps provisional
ids to global ids (one array lookup, in a reader thread), and appends each split's rows to
its .npy files (a bag's as offsets + values [+ weights], see :mod:`~shaver.data.store`).
Plain sequential file I/O, no memory maps: resident memory stays a few chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from shaver.data.decode import SPLIT_IDS
from shaver.data.stages import prefetched
from shaver.data.store import SPLITS, bag_file
from shaver.layout import Bag

_PARTS = (("pids", np.int32), ("labels", np.float32), ("split", np.int8), ("lines", np.int64))
#: A bag's spill files: list length per row, value pids, value weights (weighted bags).
_BAG_PARTS = (("len", np.int32), ("vals", np.int32), ("wts", np.float32))
#: A bag's spilled rows: (lengths (rows,), value provisional ids, weights or None).
BagRows = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def _bag_parts(bag: Bag) -> tuple[tuple[str, type], ...]:
    return _BAG_PARTS if bag.weighted else _BAG_PARTS[:2]


def _bag_spill(prefix: str, bag: Bag, name: str) -> str:
    return f"{prefix}bag{bag.field}_{name}.bin"


class Spill:
    """Appends decoded rows to the temporary files in ``tmp`` (use as a context manager)."""

    def __init__(self, tmp: Path, num_fields: int, prefix: str = "",
                 bags: tuple[Bag, ...] = ()):
        self.tmp, self.num_fields, self.prefix, self.bags = tmp, num_fields, prefix, bags
        self._stack = ExitStack()
        self._files = {}
        self.rows = dict.fromkeys(SPLITS, 0)
        #: Per bag field, the values spilled per split.
        self.values = {b.field: dict.fromkeys(SPLITS, 0) for b in bags}

    def __enter__(self) -> Spill:
        names = [f"{self.prefix}{name}.bin" for name, _ in _PARTS]
        names += [_bag_spill(self.prefix, b, name) for b in self.bags for name, _ in _bag_parts(b)]
        self._files = {name: self._stack.enter_context(open(self.tmp / name, "wb"))
                       for name in names}
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def write(self, pids: np.ndarray, labels: np.ndarray, split: np.ndarray,
              lines: np.ndarray, bags: dict[int, BagRows] | None = None) -> None:
        """Append a block's rows; ``bags`` maps each bag field to its :data:`BagRows`."""
        for (name, dtype), arr in zip(_PARTS, (pids, labels, split, lines)):
            self._files[f"{self.prefix}{name}.bin"].write(
                np.ascontiguousarray(arr, dtype=dtype).tobytes())
        for name, sid in SPLIT_IDS.items():
            self.rows[name] += int(np.count_nonzero(split == sid))
        for b in self.bags:
            rows = (bags or {})[b.field]
            for (name, dtype), arr in zip(_bag_parts(b), rows):
                self._files[_bag_spill(self.prefix, b, name)].write(
                    np.ascontiguousarray(arr, dtype=dtype).tobytes())
            for name, sid in SPLIT_IDS.items():
                self.values[b.field][name] += int(rows[0][split == sid].sum())


def _npy_writer(path: Path, dtype: type, shape: tuple[int, ...]):
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return f


def remap(tmp: Path, parts: list[tuple[str, dict[str, int], np.ndarray, dict]], num_fields: int,
          chunk: int = 1 << 16, bags: tuple[Bag, ...] = ()) -> None:
    """Pass 2: write ``{split}_ids/labels/rows.npy`` (and each bag's
    ``{split}_bag{f}_offsets/values[/weights].npy``) from the spills; delete the spills.

    ``parts``: in row order, ``(prefix, rows per split, to_global, values)`` of each spill,
    where ``to_global`` int32 (provisional ids of the part,) is the global id of each one
    and ``values`` the bag values per bag field per split (:attr:`Spill.values`).
    ``num_fields``: the single-valued fields.
    """
    rows = {s: sum(p[1][s] for p in parts) for s in SPLITS}
    nf = num_fields
    with ExitStack() as stack:
        outs = {s: (stack.enter_context(_npy_writer(tmp / f"{s}_ids.npy", np.int32, (rows[s], nf))),
                    stack.enter_context(_npy_writer(tmp / f"{s}_labels.npy", np.float32, (rows[s],))),
                    stack.enter_context(_npy_writer(tmp / f"{s}_rows.npy", np.int64, (rows[s],))))
                for s in SPLITS}
        bag_outs = {}
        for b in bags:
            for s in SPLITS:
                total = sum(p[3][b.field][s] for p in parts)
                files = [stack.enter_context(_npy_writer(tmp / bag_file(s, b.field, part), dtype,
                                                         shape))
                         for part, dtype, shape in (("offsets", np.int64, (rows[s] + 1,)),
                                                    ("values", np.int32, (total,)),
                                                    ("weights", np.float32, (total,)))
                         if part != "weights" or b.weighted]
                files[0].write(np.zeros(1, np.int64).tobytes())
                bag_outs[b.field, s] = _BagOut(files)
        for prefix, part_rows, maps, _ in parts:
            _remap_part(tmp, prefix, sum(part_rows.values()), nf, maps, outs, chunk,
                        bags, bag_outs)
    for prefix, _, _, _ in parts:
        names = [f"{prefix}{name}.bin" for name, _ in _PARTS]
        names += [_bag_spill(prefix, b, name) for b in bags for name, _ in _bag_parts(b)]
        for name in names:
            (tmp / name).unlink()


class _BagOut:
    """One split's open bag files (offsets, values[, weights]) and its running offset."""

    def __init__(self, files: list):
        self.files, self.end = files, 0

    def write(self, lengths: np.ndarray, values: np.ndarray, weights: np.ndarray | None) -> None:
        ends = self.end + np.cumsum(lengths, dtype=np.int64)
        if len(ends):
            self.end = int(ends[-1])
        self.files[0].write(ends.tobytes())
        self.files[1].write(np.ascontiguousarray(values, dtype=np.int32).tobytes())
        if weights is not None:
            self.files[2].write(np.ascontiguousarray(weights, dtype=np.float32).tobytes())


def _remap_part(tmp: Path, prefix: str, total: int, nf: int, to_global: np.ndarray,
                outs: dict, chunk: int, bags: tuple[Bag, ...] = (),
                bag_outs: dict | None = None) -> None:
    for ids, labels, split, lines, bag_rows in prefetched(
            _mapped_chunks(tmp, prefix, total, nf, to_global, chunk, bags)):
        for s, sid in SPLIT_IDS.items():
            x_out, y_out, r_out = outs[s]
            sel = split == sid
            if sel.all():  # whole chunk in one split (given files): no copies
                x_out.write(ids)
                y_out.write(labels)
                r_out.write(lines)
            elif sel.any():
                x_out.write(ids[sel])
                y_out.write(labels[sel])
                r_out.write(lines[sel])
            if not sel.any():
                continue
            for b, (lengths, values, weights) in zip(bags, bag_rows):
                if sel.all():
                    bag_outs[b.field, s].write(lengths, values, weights)
                    continue
                of_value = np.repeat(sel, lengths)
                bag_outs[b.field, s].write(lengths[sel], values[of_value],
                                           None if weights is None else weights[of_value])


def _mapped_chunks(tmp: Path, prefix: str, total: int, nf: int, to_global: np.ndarray,
                   chunk: int, bags: tuple[Bag, ...] = ()) -> Iterator[tuple]:
    """Chunks of a spill: global ids int32 (n, nf), labels, split ids, line numbers and
    per bag (lengths, global ids of the values, weights or None)."""
    with ExitStack() as stack:
        src = {name: stack.enter_context(open(tmp / f"{prefix}{name}.bin", "rb"))
               for name, _ in _PARTS}
        bag_src = [{name: stack.enter_context(open(tmp / _bag_spill(prefix, b, name), "rb"))
                    for name, _ in _bag_parts(b)} for b in bags]
        for lo in range(0, total, chunk):
            n = min(chunk, total - lo)
            pids = np.fromfile(src["pids"], dtype=np.int32, count=n * nf).reshape(n, nf)
            labels = np.fromfile(src["labels"], dtype=np.float32, count=n)
            split = np.fromfile(src["split"], dtype=np.int8, count=n)
            lines = np.fromfile(src["lines"], dtype=np.int64, count=n)
            bag_rows = []
            for files in bag_src:
                lengths = np.fromfile(files["len"], dtype=np.int32, count=n)
                count = int(lengths.sum())
                values = np.fromfile(files["vals"], dtype=np.int32, count=count)
                weights = (np.fromfile(files["wts"], dtype=np.float32, count=count)
                           if "wts" in files else None)
                bag_rows.append((lengths, to_global.take(values), weights))
            yield to_global.take(pids), labels, split, lines, bag_rows
