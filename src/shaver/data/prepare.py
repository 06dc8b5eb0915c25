"""Streaming preparation: raw files + spec -> prepared directory (see ``store``).

Pass 1 (count) reads the raw text once, block by block: it checks labels and values,
assigns splits, gives every token a provisional id (first appearance, in a numpy hash
table over the distinct texts of each block: :mod:`~shaver.data.strtable`) and counts
tokens on the train split (every value of a list field: :mod:`~shaver.data.lists`); the
provisional ids of each row go to a temporary binary file (4 bytes a field a row, the size
of the output; a list field's values ragged, beside). Parsing, encoding and numbering run in
three threads (see :func:`~shaver.data.stages.prefetched`). The vocabularies are then
fixed from the counts. Pass 2 (encode) streams that binary file, maps provisional ids to
global ids with one array lookup, and appends each split's rows to its .npy files (sized
by pass 1). Memory holds a few blocks (4 MiB of text each) and one entry per distinct
value (the text's bytes + about 70 bytes), never the raw file; it grows with the number
of distinct values, not with rows. Output appears only when complete (a temporary
directory renamed at the end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shaver.data.decode import SPLIT_IDS
from shaver.data.joins import SideTable
from shaver.data.presets import load_preset
from shaver.data.readers import BLOCK_BYTES, header_columns
from shaver.data.scan import Scanner
from shaver.data.spec import DatasetSpec
from shaver.data.spec_checks import check_names
from shaver.data.spill import remap
from shaver.data.store import SPLITS, PreparedDataset, finalize_prepared
from shaver.data.vocab import OOV_TOKEN, Vocabularies
from shaver.errors import DataError, SpecError

log = logging.getLogger(__name__)
#: Global ids are stored as int32.
MAX_FEATURES = 2**31 - 1
Inputs = str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike]


def resolve_spec(spec_or_preset: DatasetSpec | Mapping[str, Any] | str | os.PathLike) -> DatasetSpec:
    """A :class:`DatasetSpec` from itself, a dict, a preset name or a YAML path (a
    :class:`~os.PathLike` is always a file, whatever its suffix)."""
    if isinstance(spec_or_preset, DatasetSpec):
        return spec_or_preset
    if isinstance(spec_or_preset, Mapping):
        return DatasetSpec.from_dict(dict(spec_or_preset))
    text = str(spec_or_preset)
    if isinstance(spec_or_preset, os.PathLike) or text.endswith((".yaml", ".yml")) \
            or os.sep in text:
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


def _check_header(spec: DatasetSpec, path: Path) -> None:
    """With a header (or Parquet), the spec's columns are checked against it before any
    parsing, so a mistake names the spec key (``fields[2].name: unknown column ...``)."""
    names = header_columns(path, spec.input)
    if names is None:
        return  # the spec names the columns: checked when it was read
    named = dataclasses.replace(spec, input=dataclasses.replace(spec.input, columns=tuple(names)))
    try:
        check_names(named)
    except SpecError as exc:
        line = "" if spec.input.format == "parquet" else ":1"
        raise DataError(f"{path}{line}: {exc}") from None


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise DataError(f"{folder}: cannot create the output's folder: {blocking} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _needed_columns(spec: DatasetSpec) -> list[str]:
    cols = [spec.label.column]
    cols += [f.column for f in spec.fields if not f.source]
    cols += [j.key for j in spec.joins]
    if spec.split.method == "column":
        cols.append(spec.split.column)
    return list(dict.fromkeys(cols))


def _vocabularies(spec: DatasetSpec, vocab: Vocabularies
                  ) -> tuple[list[list[str]], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per field the vocabulary; int32 the global id of each provisional id; train
    frequencies; quantile edges."""
    vocabs, local, edges = vocab.finish(list(spec.fields),
                                        [spec.min_count_of(f) for f in spec.fields])
    dims = [len(v) for v in vocabs]
    if int(sum(dims)) > MAX_FEATURES:
        raise DataError(f"{sum(dims)} features do not fit int32 ids (raise min_count)")
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]]).astype(np.int64)
    to_global = (local + offsets[vocab.table.tags]).astype(np.int32)
    freq = np.zeros(int(sum(dims)), dtype=np.int64)
    np.add.at(freq, to_global, vocab.counts[:len(vocab)])
    return vocabs, to_global, freq, edges


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
    workers: int | None = None,
) -> PreparedDataset:
    """Prepare raw files into ``out`` (which must not exist) and open the result.

    ``inputs``: one path, several paths (read in order as one stream), or for given-file
    splits a mapping ``{"train": p, "val": p, "test": p}``. ``seed`` overrides the spec's
    split seed. ``joins`` maps a join table's name to its file. ``skip_bad_lines`` skips
    (and counts, in meta.json) lines with a wrong column count or a bad value instead of
    stopping at the first one. ``workers``: processes reading parts of a large TSV/libfm
    file at once (default: one per CPU, parts of at least 64 MiB); the output is the same
    for any number.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise DataError(f"workers must be an integer >= 1 (None: one per CPU), got {workers!r}")
    spec = resolve_spec(spec_or_preset)
    if seed is not None:
        spec = dataclasses.replace(spec, split=dataclasses.replace(spec.split, seed=int(seed)))
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: output directory already exists (choose another or remove it)")
    files = _input_list(spec, inputs)
    spec, tables = _side_tables(spec, files[0][0], joins)
    _check_header(spec, files[0][0])
    scanner = Scanner(spec, files, tables, _needed_columns(spec), seed=spec.split.seed,
                      skip_bad_lines=skip_bad_lines, block_bytes=block_bytes, workers=workers,
                      quiet=quiet)
    created = _make_folders(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        scan = scanner.scan(tmp)
        bad = scan.bad
        vocabs, to_global, freq, quantile_edges = _vocabularies(spec, scan.vocab)
        layout = spec.layout
        remap(tmp, [(prefix, rows, to_global[part_map], values)
                    for prefix, rows, part_map, values in scan.parts],
              len(layout.single_fields), bags=layout.bags)
        np.save(tmp / "frequencies.npy", freq)
        vocab = {f.name: v for f, v in zip(spec.fields, vocabs)}
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        edges = {name: [float(x) for x in e] for name, e in quantile_edges.items()}
        extra = {
            "inputs": [{"path": str(p), "bytes": p.stat().st_size} for p, _ in files],
            "joins": {n: {"path": str(t.path), "rows": t.rows} for n, t in tables.items()},
            "skipped_lines": bad.count,
            "skipped_examples": bad.first,
            "quantile_edges": edges,
            "oov_token": OOV_TOKEN,
        }
        finalize_prepared(tmp, out, field_names=spec.field_names,
                          field_dims=[len(v) for v in vocabs], spec=spec.to_dict(),
                          extra_meta=extra, layout=layout)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created):  # the folders made for the output, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    if bad.count:
        log.warning("skipped %d bad lines (see meta.json: skipped_examples)", bad.count)
    return PreparedDataset(out)
