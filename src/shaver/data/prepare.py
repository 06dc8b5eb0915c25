"""Streaming preparation: raw files + spec -> prepared directory (see ``store``).

Pass 1 reads every block, checks labels and values, assigns splits and counts tokens on
the train split (plus a sample for quantile edges). Vocabularies follow. Pass 2 reads the
files again and writes global ids straight into memory-mapped .npy files sized by pass 1.
Memory holds one block (16 MiB of text) and the vocabularies, never the raw file.
Output appears only when complete (a temporary directory renamed at the end).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from shaver.data.decode import SPLIT_IDS, BlockContext, Decoded, decode_block
from shaver.data.joins import SideTable
from shaver.data.presets import load_preset
from shaver.data.readers import BLOCK_BYTES, BadLines, header_lines, read_blocks
from shaver.data.spec import DatasetSpec
from shaver.data.store import SPLITS, PreparedDataset, finalize_prepared
from shaver.data.tokens import quantile_edges, quantile_vocab
from shaver.data.vocab import OOV_TOKEN, NumericSample, TokenCounts, local_ids, lookup_table
from shaver.errors import DataError

log = logging.getLogger(__name__)
#: Global ids are stored as int32.
MAX_FEATURES = 2**31 - 1
Inputs = str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike]


def resolve_spec(spec_or_preset: DatasetSpec | Mapping[str, Any] | str | os.PathLike) -> DatasetSpec:
    """A :class:`DatasetSpec` from itself, a dict, a preset name or a YAML path."""
    if isinstance(spec_or_preset, DatasetSpec):
        return spec_or_preset
    if isinstance(spec_or_preset, Mapping):
        return DatasetSpec.from_dict(dict(spec_or_preset))
    text = str(spec_or_preset)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return DatasetSpec.load(text)
    return load_preset(text)


def _input_list(spec: DatasetSpec, inputs: Inputs) -> list[tuple[Path, int | None]]:
    """``[(path, fixed split id or None)]``; a mapping (split -> path) means given files."""
    if isinstance(inputs, Mapping):
        unknown = sorted(set(inputs) - set(SPLITS))
        if unknown:
            raise DataError(f"unknown split {unknown[0]!r} for an input file "
                            f"(expected {', '.join(SPLITS)})")
        return [(Path(inputs[s]), SPLIT_IDS[s]) for s in SPLITS if s in inputs]
    paths = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if not paths:
        raise DataError("no input file given")
    if spec.split.method == "files":
        if len(paths) != 3:
            raise DataError(f"split method 'files' needs three inputs (train, val, test), "
                            f"got {len(paths)}")
        return [(Path(p), i) for i, p in enumerate(paths)]
    return [(Path(p), None) for p in paths]


def _side_tables(spec: DatasetSpec, first_input: Path,
                 join_paths: Mapping[str, str | os.PathLike] | None) -> tuple[DatasetSpec, dict]:
    """Load the join tables; drop the fields of optional ones whose file is absent."""
    join_paths = dict(join_paths or {})
    unknown = sorted(set(join_paths) - {j.name for j in spec.joins})
    if unknown:
        raise DataError(f"unknown join table {unknown[0]!r} "
                        f"(the spec has: {', '.join(j.name for j in spec.joins) or 'none'})")
    tables, dropped = {}, []
    for j in spec.joins:
        path = Path(join_paths[j.name]) if j.name in join_paths else first_input.parent / j.path
        if not path.exists() and j.optional and j.name not in join_paths:
            log.info("join table %s not found at %s: leaving out its fields", j.name, path)
            dropped.append(j.name)
            continue
        tables[j.name] = SideTable(j, path)
    if dropped:
        spec = dataclasses.replace(
            spec, joins=tuple(j for j in spec.joins if j.name not in dropped),
            fields=tuple(f for f in spec.fields if f.source not in dropped))
    return spec, tables


def _needed_columns(spec: DatasetSpec) -> list[str]:
    cols = [spec.label.column]
    cols += [f.column for f in spec.fields if not f.source]
    cols += [j.key for j in spec.joins]
    if spec.split.method == "column":
        cols.append(spec.split.column)
    return list(dict.fromkeys(cols))


class _Reader:
    """Both passes read the inputs through this, so they decode the same rows."""

    def __init__(self, spec, inputs, tables, seed, skip_bad_lines, block_bytes, quiet):
        self.spec, self.inputs, self.tables = spec, inputs, tables
        self.seed, self.skip, self.block_bytes, self.quiet = seed, skip_bad_lines, block_bytes, quiet
        self.needed = _needed_columns(spec)
        self.edges: dict[str, np.ndarray] = {}

    def blocks(self, desc: str, bad: BadLines) -> Iterator[Decoded]:
        rng = np.random.default_rng(self.seed)
        with tqdm(desc=desc, unit=" rows", disable=self.quiet, unit_scale=True) as bar:
            for path, fixed in self.inputs:
                ctx = BlockContext(self.spec, path, header_lines(self.spec.input), self.skip,
                                   bad, self.tables, self.edges, fixed, rng)
                for block in read_blocks(path, self.spec.input, self.needed,
                                         skip_bad_lines=self.skip, bad=bad,
                                         block_bytes=self.block_bytes):
                    bar.update(len(block))
                    yield decode_block(ctx, block)


def _count_pass(reader: _Reader, bad: BadLines) -> tuple[dict[str, int], list, list]:
    spec = reader.spec
    rows = dict.fromkeys(SPLITS, 0)
    counters: list[Any] = [
        NumericSample() if f.discretiser == "quantile" else TokenCounts() for f in spec.fields]
    for dec in reader.blocks("count", bad):
        for name, sid in SPLIT_IDS.items():
            rows[name] += int(np.count_nonzero(dec.split == sid))
        train = np.flatnonzero(dec.split == 0)
        for counter, coded in zip(counters, dec.fields):
            counter.add(coded, train)
    if sum(rows.values()) == 0:
        raise DataError(f"{reader.inputs[0][0]}: no data rows (expected at least one)")
    vocabs = []
    for f, counter in zip(spec.fields, counters):
        if isinstance(counter, NumericSample):
            reader.edges[f.name] = quantile_edges(counter.values(), f.bins)
            vocabs.append([OOV_TOKEN, *quantile_vocab(reader.edges[f.name])])
        else:
            vocabs.append(counter.vocabulary(spec.min_count_of(f)))
    return rows, vocabs, counters


def _encode_pass(reader: _Reader, tmp: Path, rows: dict[str, int], vocabs: list[list[str]]) -> None:
    dims = [len(v) for v in vocabs]
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]]).astype(np.int64)
    if int(sum(dims)) > MAX_FEATURES:
        raise DataError(f"{sum(dims)} features do not fit int32 ids (raise min_count)")
    tables = [lookup_table(v) for v in vocabs]
    nf = len(vocabs)
    outs = {}
    for name in SPLITS:
        outs[name] = (
            np.lib.format.open_memmap(tmp / f"{name}_ids.npy", "w+", np.int32, (rows[name], nf)),
            np.lib.format.open_memmap(tmp / f"{name}_labels.npy", "w+", np.float32, (rows[name],)),
            np.lib.format.open_memmap(tmp / f"{name}_rows.npy", "w+", np.int64, (rows[name],)),
        )
    cursor = dict.fromkeys(SPLITS, 0)
    freq = np.zeros(int(sum(dims)), dtype=np.int64)
    for dec in reader.blocks("encode", BadLines()):
        ids = np.empty((len(dec.labels), nf), dtype=np.int32)
        for j, (table, coded) in enumerate(zip(tables, dec.fields)):
            ids[:, j] = local_ids(table, coded) + offsets[j]
        for name, sid in SPLIT_IDS.items():
            sel = np.flatnonzero(dec.split == sid)
            lo, hi = cursor[name], cursor[name] + len(sel)
            if hi > rows[name]:
                raise DataError(f"{reader.inputs[0][0]}: the input changed between passes")
            x_out, y_out, r_out = outs[name]
            x_out[lo:hi] = ids[sel]
            y_out[lo:hi] = dec.labels[sel]
            r_out[lo:hi] = dec.lines[sel]
            cursor[name] = hi
            if sid == 0:
                freq += np.bincount(ids[sel].ravel(), minlength=len(freq))
    if cursor != rows:
        raise DataError(f"{reader.inputs[0][0]}: the input changed between passes")
    for arrays in outs.values():
        for arr in arrays:
            arr.flush()
    del outs
    np.save(tmp / "frequencies.npy", freq)


def prepare_dataset(
    spec_or_preset: DatasetSpec | Mapping[str, Any] | str | os.PathLike,
    inputs: Inputs,
    out: str | os.PathLike,
    *,
    seed: int | None = None,
    joins: Mapping[str, str | os.PathLike] | None = None,
    skip_bad_lines: bool = False,
    quiet: bool = False,
    block_bytes: int = BLOCK_BYTES,
) -> PreparedDataset:
    """Prepare raw files into ``out`` (which must not exist) and open the result.

    ``inputs``: one path, several paths (read in order as one stream), or for given-file
    splits a mapping ``{"train": p, "val": p, "test": p}``. ``seed`` overrides the spec's
    split seed. ``joins`` maps a join table's name to its file. ``skip_bad_lines`` skips
    (and counts, in meta.json) lines with a wrong column count or a bad value instead of
    stopping at the first one.
    """
    spec = resolve_spec(spec_or_preset)
    if seed is not None:
        spec = dataclasses.replace(spec, split=dataclasses.replace(spec.split, seed=int(seed)))
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: output directory already exists (choose another or remove it)")
    files = _input_list(spec, inputs)
    spec, tables = _side_tables(spec, files[0][0], joins)
    reader = _Reader(spec, files, tables, spec.split.seed, skip_bad_lines, block_bytes, quiet)
    bad = BadLines()
    rows, vocabs, _ = _count_pass(reader, bad)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _encode_pass(reader, tmp, rows, vocabs)
        vocab = {f.name: v for f, v in zip(spec.fields, vocabs)}
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        extra = {
            "inputs": [{"path": str(p), "bytes": p.stat().st_size} for p, _ in files],
            "joins": {n: {"path": str(t.path), "rows": t.rows} for n, t in tables.items()},
            "skipped_lines": bad.count,
            "skipped_examples": bad.first,
            "quantile_edges": {k: [float(x) for x in v] for k, v in reader.edges.items()},
            "oov_token": OOV_TOKEN,
        }
        finalize_prepared(tmp, out, field_names=spec.field_names, field_dims=[len(v) for v in vocabs],
                          spec=spec.to_dict(), extra_meta=extra)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if bad.count:
        log.warning("skipped %d bad lines (see meta.json: skipped_examples)", bad.count)
    return PreparedDataset(out)
