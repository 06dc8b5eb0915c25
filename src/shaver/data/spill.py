"""The temporary binary file between the two passes, and the encode pass that reads it.

Pass 1 appends, per block, the provisional ids (int32 (rows, fields)), labels, split ids
and raw line numbers of its rows to four files. Pass 2 streams them back in chunks, maps
provisional ids to global ids (one array lookup, in a reader thread), and appends each
split's rows to its .npy files. Plain sequential file I/O, no memory maps: resident memory
stays a few chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from shaver.data.decode import SPLIT_IDS
from shaver.data.stages import prefetched
from shaver.data.store import SPLITS

_PARTS = (("pids", np.int32), ("labels", np.float32), ("split", np.int8), ("lines", np.int64))


class Spill:
    """Appends decoded rows to the temporary files in ``tmp`` (use as a context manager)."""

    def __init__(self, tmp: Path, num_fields: int, prefix: str = ""):
        self.tmp, self.num_fields, self.prefix = tmp, num_fields, prefix
        self._stack = ExitStack()
        self._files = {}
        self.rows = dict.fromkeys(SPLITS, 0)

    def __enter__(self) -> Spill:
        self._files = {name: self._stack.enter_context(
            open(self.tmp / f"{self.prefix}{name}.bin", "wb"))
                       for name, _ in _PARTS}
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def write(self, pids: np.ndarray, labels: np.ndarray, split: np.ndarray,
              lines: np.ndarray) -> None:
        for (name, dtype), arr in zip(_PARTS, (pids, labels, split, lines)):
            self._files[name].write(np.ascontiguousarray(arr, dtype=dtype).tobytes())
        for name, sid in SPLIT_IDS.items():
            self.rows[name] += int(np.count_nonzero(split == sid))


def _npy_writer(path: Path, dtype: type, shape: tuple[int, ...]):
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return f


def remap(tmp: Path, parts: list[tuple[str, dict[str, int], np.ndarray]], num_fields: int,
          chunk: int = 1 << 16) -> None:
    """Pass 2: write ``{split}_ids/labels/rows.npy`` from the spills; delete the spills.

    ``parts``: in row order, ``(prefix, rows per split, to_global)`` of each spill, where
    ``to_global`` int32 (provisional ids of the part,) is the global id of each one.
    """
    rows = {s: sum(p[1][s] for p in parts) for s in SPLITS}
    nf = num_fields
    with ExitStack() as stack:
        outs = {s: (stack.enter_context(_npy_writer(tmp / f"{s}_ids.npy", np.int32, (rows[s], nf))),
                    stack.enter_context(_npy_writer(tmp / f"{s}_labels.npy", np.float32, (rows[s],))),
                    stack.enter_context(_npy_writer(tmp / f"{s}_rows.npy", np.int64, (rows[s],))))
                for s in SPLITS}
        for prefix, part_rows, maps in parts:
            _remap_part(tmp, prefix, sum(part_rows.values()), nf, maps, outs, chunk)
    for prefix, _, _ in parts:
        for name, _ in _PARTS:
            (tmp / f"{prefix}{name}.bin").unlink()


def _remap_part(tmp: Path, prefix: str, total: int, nf: int, to_global: np.ndarray,
                outs: dict, chunk: int) -> None:
    for ids, labels, split, lines in prefetched(_mapped_chunks(tmp, prefix, total, nf,
                                                               to_global, chunk)):
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


def _mapped_chunks(tmp: Path, prefix: str, total: int, nf: int, to_global: np.ndarray,
                   chunk: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Chunks of a spill: global ids int32 (n, nf), labels, split ids, line numbers."""
    with ExitStack() as stack:
        src = {name: stack.enter_context(open(tmp / f"{prefix}{name}.bin", "rb"))
               for name, _ in _PARTS}
        for lo in range(0, total, chunk):
            n = min(chunk, total - lo)
            pids = np.fromfile(src["pids"], dtype=np.int32, count=n * nf).reshape(n, nf)
            labels = np.fromfile(src["labels"], dtype=np.float32, count=n)
            split = np.fromfile(src["split"], dtype=np.int8, count=n)
            lines = np.fromfile(src["lines"], dtype=np.int64, count=n)
            yield to_global.take(pids), labels, split, lines
