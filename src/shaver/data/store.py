"""The prepared dataset: the on-disk contract between data preparation and every later stage.

Layout of a prepared directory (format version 1; version 2 when a field is a bag)::

    meta.json            format, version, library version, spec, field_names, field_dims,
                         rows per split, positive rate per split, checksums, fingerprint,
                         layout (version 2: the bags, see :mod:`shaver.layout`), ...
    vocab.json           per field: its values in local-id order (local id 0 is the OOV id)
    frequencies.npy      int64 (num_features,): occurrences of each global id on the train
                         split (every value of a bag counts)
    {split}_ids.npy      int32 (rows, single fields): global ids (field offsets already
                         applied) of the single-valued fields, in field order
    {split}_bag{f}_offsets.npy  int64 (rows + 1,): bag field f's values of row r are
                         values[offsets[r]:offsets[r + 1]] (version 2; ragged, at most
                         max_len per row, truncated as the spec says)
    {split}_bag{f}_values.npy   int32 (total,): the bags' global ids, in list order
    {split}_bag{f}_weights.npy  float32 (total,): their weights (weighted bags only)
    {split}_labels.npy   float32 (rows,): 0/1 labels
    {split}_rows.npy     int64 (rows,): 0-based data-line number of each row in the raw input
                         (the split assignment, traceable back to the source)

``split`` is one of ``train``, ``val``, ``test``. Rows of one split are contiguous, so an
epoch reads slices of one memory map. Global id of (field f, local id j) is
``offsets[f] + j`` with ``offsets = cumsum([0] + field_dims[:-1])``. Every reader sees rows as
SLOTS (:mod:`shaver.layout`): :meth:`PreparedDataset.slots` gathers any rows into
``x`` (rows, slots), bags padded with -1, and their weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from shaver import __version__
from shaver.errors import DataError, ShaverError
from shaver.fileio import check_format, read_json
from shaver.layout import FieldLayout, pad_bags, ranges

FORMAT = "shaver-prepared"
FORMAT_VERSION = 1
#: The version of a dataset with bags (one without stays version 1, byte for byte).
BAGS_VERSION = 2
BAG_PARTS = ("offsets", "values", "weights")


def bag_file(split: str, field: int, part: str) -> str:
    """File name of one part (offsets | values | weights) of bag field ``field``."""
    return f"{split}_bag{int(field)}_{part}.npy"
SPLITS = ("train", "val", "test")
#: Named groups of splits accepted wherever a split is asked for.
SPLIT_GROUPS = {"train+val": ("train", "val"), "all": SPLITS}


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dataset_fingerprint(
    field_names: Sequence[str], field_dims: Sequence[int], vocab_sha256: str,
    bags: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Fingerprint of a feature map: what a model trained on the data depends on (the bags'
    layout too, when there are bags; without, the same as before bags existed)."""
    doc: dict[str, Any] = {"fields": list(field_names), "dims": [int(d) for d in field_dims],
                           "vocab": vocab_sha256}
    if bags:
        doc["bags"] = list(bags)
    payload = json.dumps(doc, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def resolve_splits(split: str | Sequence[str]) -> tuple[str, ...]:
    """``"train"`` -> ``("train",)``, ``"train+val"`` -> ``("train", "val")``; validated."""
    if isinstance(split, str):
        names = SPLIT_GROUPS.get(split) or tuple(s for s in split.split("+") if s)
    else:
        names = tuple(split)
    bad = [s for s in names if s not in SPLITS]
    if bad or not names:
        raise DataError(
            f"unknown split {split!r}: expected one of {', '.join(SPLITS)}, "
            f"a '+'-joined combination, or one of {', '.join(SPLIT_GROUPS)}"
        )
    return names


@dataclass(frozen=True)
class Batch:
    """One batch: ``x`` int64 (batch, slots) global ids (bags padded with -1), ``y`` float32
    (batch,) labels, ``w`` float32 (batch, slots) value weights (None: no weighted bag)."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray | None = None


class PreparedDataset:
    """Read access to a prepared directory (memory-mapped; nothing is loaded until used)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not self.path.is_dir():
            raise DataError(f"{self.path}: not a prepared dataset directory (it "
                            f"{'is a file' if self.path.exists() else 'does not exist'})")
        if not meta_path.is_file():
            raise DataError(f"{self.path}: not a prepared dataset (meta.json is missing)")
        meta = read_json(meta_path, DataError)
        version = meta.get("format_version") if isinstance(meta, dict) else None
        self.meta: dict[str, Any] = check_format(
            meta, fmt=FORMAT, version=BAGS_VERSION if version == BAGS_VERSION else FORMAT_VERSION,
            where=meta_path, error=DataError)
        self._maps: dict[str, np.ndarray] = {}

    # -- feature map ---------------------------------------------------------------------
    @property
    def field_names(self) -> list[str]:
        return list(self.meta["field_names"])

    @property
    def field_dims(self) -> list[int]:
        """Rows of each field in the global table (OOV id included)."""
        return [int(d) for d in self.meta["field_dims"]]

    @property
    def num_fields(self) -> int:
        return len(self.meta["field_dims"])

    @property
    def num_features(self) -> int:
        """Rows of the global embedding table: ``sum(field_dims)``."""
        return int(sum(self.field_dims))

    @cached_property
    def offsets(self) -> np.ndarray:
        """int64 (fields,): global id of each field's local id 0."""
        return np.concatenate([[0], np.cumsum(self.field_dims)[:-1]]).astype(np.int64)

    @cached_property
    def row_field(self) -> np.ndarray:
        """int64 (num_features,): the field of each global row."""
        return np.repeat(np.arange(self.num_fields, dtype=np.int64), self.field_dims)

    @cached_property
    def layout(self) -> FieldLayout:
        """The fields' slots: which fields are bags (:mod:`shaver.layout`)."""
        try:
            return FieldLayout.from_json(self.num_fields, self.meta.get("layout"))
        except ShaverError as exc:
            raise DataError(f"{self.path / 'meta.json'}: {exc}") from None

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @cached_property
    def frequencies(self) -> np.ndarray:
        """int64 (num_features,): occurrences of each global id on the train split."""
        return self._load("frequencies.npy", mmap=False)

    @cached_property
    def vocabularies(self) -> dict[str, list[str]]:
        """Per field, its raw values in local-id order (index 0 is the OOV token)."""
        path = self.path / "vocab.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DataError(f"{path}: missing") from exc

    # -- rows ----------------------------------------------------------------------------
    def num_rows(self, split: str | Sequence[str] = "train") -> int:
        return int(sum(self.meta["rows"][s] for s in resolve_splits(split)))

    def ids(self, split: str) -> np.ndarray:
        """int32 (rows, single fields) memory map of one split's global ids of the
        single-valued fields (every field, when there is no bag). :meth:`slots` gives whole
        rows, bags included."""
        (split,) = resolve_splits(split)
        return self._load(f"{split}_ids.npy")

    def bag(self, split: str, field: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(offsets int64 (rows + 1,), values int32, weights float32 or None) memory maps of
        bag field ``field`` on one split."""
        (split,) = resolve_splits(split)
        bag = self.layout.bag_of.get(int(field))
        if bag is None:
            raise DataError(f"{self.path}: field {field} is not a bag")
        offsets, values = (self._load(bag_file(split, field, p)) for p in BAG_PARTS[:2])
        weights = self._load(bag_file(split, field, "weights")) if bag.weighted else None
        return offsets, values, weights

    def slots(self, split: str, rows: np.ndarray | slice | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(x int64 (n, slots), w float32 (n, slots) or None)`` of rows ``rows`` (an index
        array, a slice, or None: all) of ONE split: single-valued fields' ids and each bag's
        ids padded with -1 (:mod:`shaver.layout`); ``w`` when a bag is weighted (1 for the
        values of unweighted bags, 0 in pads)."""
        (split,) = resolve_splits(split)
        layout = self.layout
        total = int(self.meta["rows"][split])
        index = slice(None) if rows is None else rows
        single = np.asarray(self.ids(split)[index], dtype=np.int64)
        if not layout.has_bags:
            return single, None
        picked = (np.arange(*index.indices(total)) if isinstance(index, slice)
                  else np.asarray(index, dtype=np.int64))
        n = len(single)
        x = np.empty((n, layout.num_slots), dtype=np.int64)
        w = np.ones((n, layout.num_slots), dtype=np.float32) if layout.weighted else None
        x[:, layout.starts[layout.single_fields]] = single
        for b in layout.bags:
            offsets, values, weights = self.bag(split, b.field)
            starts, stops = offsets[picked], offsets[picked + 1]
            sub = np.concatenate([[0], np.cumsum(stops - starts)]).astype(np.int64)
            take = ranges(starts, stops)
            ids, bw = pad_bags(sub, np.asarray(values[take]), b.max_len,
                               None if weights is None else np.asarray(weights[take]))
            lo, hi = int(layout.starts[b.field]), int(layout.starts[b.field + 1])
            x[:, lo:hi] = ids
            if w is not None:
                w[:, lo:hi] = bw if bw is not None else (ids >= 0)
        return x, w

    def labels(self, split: str) -> np.ndarray:
        """float32 (rows,) memory map of one split's labels."""
        (split,) = resolve_splits(split)
        return self._load(f"{split}_labels.npy")

    def check_both_labels(self, *splits: str) -> None:
        """:class:`DataError` unless each split has rows of both labels: an AUC needs both
        (else it is NaN), and training chooses its epoch by the validation AUC."""
        for split in splits:
            rows = self.num_rows(split)
            if rows == 0:
                raise DataError(f"{self.path}: the {split} split has no rows; training needs "
                                f"{split} rows of both labels (prepare the data with a split "
                                f"that leaves {split} some rows)")
            positives = int(np.count_nonzero(np.asarray(self.labels(split)) > 0.5))
            if positives in (0, rows):
                raise DataError(f"{self.path}: all {rows} rows of the {split} split have label "
                                f"{int(positives == rows)}; its AUC needs rows of both labels "
                                f"(prepare the data with a larger or another split)")

    def arrays(self, split: str | Sequence[str] = "train") -> tuple[np.ndarray, np.ndarray]:
        """``(x int64 (rows, slots), y float32 (rows,))`` of one or more splits, in memory
        (bags padded with -1; :meth:`weights` holds a weighted bag's weights)."""
        names = resolve_splits(split)
        xs = [self.slots(s)[0] for s in names]
        ys = [np.asarray(self.labels(s), dtype=np.float32) for s in names]
        return np.concatenate(xs), np.concatenate(ys)

    def weights(self, split: str | Sequence[str] = "train") -> np.ndarray | None:
        """float32 (rows, slots) value weights of one or more splits (None: no weighted bag)."""
        if not self.layout.weighted:
            return None
        return np.concatenate([self.slots(s)[1] for s in resolve_splits(split)])

    def batches(
        self,
        split: str | Sequence[str] = "train",
        batch_size: int = 4096,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        limit: int | None = None,
    ) -> Iterator[Batch]:
        """Iterate over batches of one or more splits.

        Without ``shuffle``, batches are contiguous slices of the memory maps. With it, the
        order is a permutation drawn from ``(seed, epoch)``; each batch gathers its rows
        (sorted, for locality) from the map. ``limit`` caps the rows taken (after shuffling).
        """
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        names = resolve_splits(split)
        maps = [(s, self.labels(s)) for s in names]
        sizes = np.array([len(y) for _, y in maps], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        total = int(starts[-1])
        n = total if limit is None else min(total, int(limit))
        order = None
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(total)[:n]
        stop = n - n % batch_size if drop_last else n
        for lo in range(0, stop, batch_size):
            hi = min(lo + batch_size, stop)
            if order is None:
                idx = np.arange(lo, hi)
            else:
                idx = np.sort(order[lo:hi])
            yield self._gather(maps, starts, idx)

    def _gather(self, maps, starts: np.ndarray, idx: np.ndarray) -> Batch:
        xs, ys, ws = [], [], []
        for k, (split, labels) in enumerate(maps):
            part = idx[(idx >= starts[k]) & (idx < starts[k + 1])] - starts[k]
            if len(part) == 0:
                continue
            if len(part) == part[-1] - part[0] + 1:  # contiguous: a plain slice
                part = slice(int(part[0]), int(part[-1]) + 1)
            x, w = self.slots(split, part)
            xs.append(x)
            ws.append(w)
            ys.append(labels[part])
        x = np.concatenate(xs).astype(np.int64, copy=False)
        y = np.concatenate(ys).astype(np.float32, copy=False)
        return Batch(x=x, y=y, w=None if ws[0] is None else np.concatenate(ws))

    def verify(self) -> None:
        """Recompute every checksum in meta.json; raise :class:`DataError` on a mismatch."""
        for name, digest in sorted(self.meta.get("checksums", {}).items()):
            path = self.path / name
            if not path.is_file():
                raise DataError(f"{path}: missing (listed in meta.json)")
            if sha256_file(path) != digest:
                raise DataError(f"{path}: checksum mismatch (file changed or corrupt)")

    def _load(self, name: str, mmap: bool = True) -> np.ndarray:
        if name in self._maps:
            return self._maps[name]
        path = self.path / name
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError as exc:
            raise DataError(f"{path}: missing from the prepared dataset") from exc
        except ValueError as exc:
            raise DataError(f"{path}: corrupt or not a .npy array ({exc})") from exc
        self._maps[name] = arr
        return arr

    def __repr__(self) -> str:
        rows = ", ".join(f"{s}={self.meta['rows'][s]}" for s in SPLITS)
        return (
            f"PreparedDataset({str(self.path)!r}, fields={self.num_fields}, "
            f"features={self.num_features}, {rows})"
        )


def write_bag(folder: Path, split: str, field: int, offsets: np.ndarray, values: np.ndarray,
              weights: np.ndarray | None = None, *, weighted: bool = False) -> None:
    """Save one split's bag field ``field`` (offsets int64, values int32, and float32 weights
    when ``weighted``) into ``folder``, checked for shape."""
    offsets = np.asarray(offsets, dtype=np.int64)
    values = np.asarray(values, dtype=np.int32)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(values) \
            or (np.diff(offsets) < 0).any():
        raise DataError(f"bag field {field} ({split}): offsets must rise from 0 to "
                        f"{len(values)} (the number of values)")
    np.save(folder / bag_file(split, field, "offsets"), offsets)
    np.save(folder / bag_file(split, field, "values"), values)
    if weighted:
        w = np.ones(len(values), np.float32) if weights is None else \
            np.asarray(weights, dtype=np.float32)
        if w.shape != values.shape:
            raise DataError(f"bag field {field} ({split}): {len(w)} weights for "
                            f"{len(values)} values")
        np.save(folder / bag_file(split, field, "weights"), w)


def open_dataset(path: str | os.PathLike[str]) -> PreparedDataset:
    """Open a prepared dataset directory."""
    return PreparedDataset(path)


def write_prepared(
    out: str | os.PathLike[str],
    *,
    field_names: Sequence[str],
    vocabularies: Mapping[str, Sequence[str]],
    splits: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    frequencies: np.ndarray,
    spec: Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    layout: FieldLayout | None = None,
    bags: Mapping[str, Mapping[int, tuple[np.ndarray, ...]]] | None = None,
) -> PreparedDataset:
    """Write a prepared directory from in-memory arrays, atomically.

    ``splits`` maps split name -> ``(ids int (rows, fields) global, labels (rows,), rows int64)``;
    with a ``layout`` that has bags, ``ids`` holds the single-valued fields only and
    ``bags[split][field]`` is ``(offsets, values)`` or ``(offsets, values, weights)``.
    Used by tests, the built-in datasets and any caller that already holds the arrays;
    the streaming preparer writes the same files itself via :func:`finalize_prepared`.
    Refuses to overwrite an existing ``out``.
    """
    layout = layout or FieldLayout.single(len(field_names))
    columns = len(layout.single_fields)
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: output directory already exists (choose another or remove it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split in SPLITS:
            ids, labels, rows = splits.get(split, (None, None, None))
            if ids is None:
                ids = np.zeros((0, columns), np.int32)
                labels = np.zeros(0, np.float32)
                rows = np.zeros(0, np.int64)
            for b in layout.bags:
                parts = (bags or {}).get(split, {}).get(b.field)
                if parts is None:
                    if len(labels):
                        raise DataError(f"write_prepared: split {split} lacks bag field "
                                        f"{b.field}")
                    parts = (np.zeros(1, np.int64), np.zeros(0, np.int32),
                             np.zeros(0, np.float32))
                write_bag(tmp, split, b.field, *parts, weighted=b.weighted)
            np.save(tmp / f"{split}_ids.npy", np.ascontiguousarray(ids, dtype=np.int32))
            np.save(tmp / f"{split}_labels.npy", np.asarray(labels, dtype=np.float32))
            np.save(tmp / f"{split}_rows.npy", np.asarray(rows, dtype=np.int64))
        np.save(tmp / "frequencies.npy", np.asarray(frequencies, dtype=np.int64))
        vocab = {f: list(vocabularies[f]) for f in field_names}
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        finalize_prepared(tmp, out, field_names=field_names,
                          field_dims=[len(vocab[f]) for f in field_names],
                          spec=spec, extra_meta=extra_meta, layout=layout)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedDataset(out)


def finalize_prepared(
    tmp: Path,
    out: Path,
    *,
    field_names: Sequence[str],
    field_dims: Sequence[int],
    spec: Mapping[str, Any] | None,
    extra_meta: Mapping[str, Any] | None = None,
    layout: FieldLayout | None = None,
) -> None:
    """Write meta.json (checksums, counts, fingerprint) into ``tmp`` and rename it to ``out``.
    A ``layout`` with bags makes it a version-2 dataset (the layout is in meta.json and in
    the fingerprint); without, it is version 1 as before."""
    bags = layout.to_json() if layout is not None else None
    rows, pos = {}, {}
    for split in SPLITS:
        labels = np.load(tmp / f"{split}_labels.npy", mmap_mode="r", allow_pickle=False)
        rows[split] = int(len(labels))
        pos[split] = float(labels.mean()) if len(labels) else None
    files = sorted(p.name for p in tmp.iterdir() if p.name != "meta.json")
    checksums = {name: sha256_file(tmp / name) for name in files}
    meta = {
        "format": FORMAT,
        "format_version": BAGS_VERSION if bags else FORMAT_VERSION,
        "library_version": __version__,
        "field_names": list(field_names),
        "field_dims": [int(d) for d in field_dims],
        "num_features": int(sum(field_dims)),
        "rows": rows,
        "positive_rate": pos,
        "fingerprint": dataset_fingerprint(field_names, field_dims, checksums["vocab.json"],
                                           bags),
        "checksums": checksums,
        "spec": dict(spec or {}),
        **({"layout": bags} if bags else {}),
        **dict(extra_meta or {}),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if out.exists():
        raise DataError(f"{out}: output directory already exists (choose another or remove it)")
    os.replace(tmp, out)
