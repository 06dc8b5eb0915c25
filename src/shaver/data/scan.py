"""Pass 1 (count): read the raw text once, in parallel parts, into provisional ids.

Each input file is one part, or for quote-free text (TSV, libfm) several byte ranges cut
at line boundaries, read by worker processes. A part numbers its tokens in order of first
appearance, counts them on the train split and spills its rows (see :mod:`spill`). The
parts are then merged in file order, so the result is the same for any number of workers:
split draws depend on (seed, file, line) only, vocabularies on the summed counts.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from shaver.data.decode import BlockContext, decode_block
from shaver.data.readers import BadLines, TextRange, header_lines, read_blocks, split_ranges
from shaver.data.spec import DatasetSpec
from shaver.data.spill import Spill
from shaver.data.vocab import FieldIndex, QuantileIndex
from shaver.errors import DataError

#: Auto mode cuts a file into parts of at least this many bytes.
MIN_PART_BYTES = 64 << 20


@dataclass(frozen=True)
class Job:
    index: int
    path: Path
    fixed_split: int | None
    file_index: int
    part: TextRange | None


@dataclass
class PartResult:
    prefix: str
    rows: dict[str, int]
    tables: list[tuple[list[str], np.ndarray]]
    bad_count: int = 0
    bad_first: list[str] = field(default_factory=list)


@dataclass
class Scan:
    """What pass 1 hands to pass 2."""

    indexes: list[FieldIndex]
    parts: list[tuple[str, dict[str, int], list[np.ndarray]]]  # prefix, rows, local->global
    bad: BadLines


def new_indexes(spec: DatasetSpec) -> list[FieldIndex]:
    return [QuantileIndex(f.bins) if f.discretiser == "quantile" else FieldIndex()
            for f in spec.fields]


class Scanner:
    def __init__(self, spec: DatasetSpec, inputs: list[tuple[Path, int | None]], tables: dict,
                 needed: list[str], *, seed: int, skip_bad_lines: bool, block_bytes: int,
                 workers: int | None, quiet: bool):
        self.spec, self.inputs, self.tables, self.needed = spec, inputs, tables, needed
        self.seed, self.skip, self.block_bytes, self.quiet = seed, skip_bad_lines, block_bytes, quiet
        self.workers = workers

    def jobs(self) -> list[Job]:
        n = self.workers if self.workers is not None else (os.cpu_count() or 1)
        jobs: list[Job] = []
        for file_index, (path, fixed) in enumerate(self.inputs):
            ranges: list[TextRange | None] = [None]
            if n > 1 and self.spec.input.format in ("tsv", "libfm") and path.is_file():
                parts = n if self.workers is not None else min(
                    n, path.stat().st_size // MIN_PART_BYTES)
                if parts > 1:
                    ranges = list(split_ranges(path, parts, header_lines(self.spec.input)))
            jobs += [Job(len(jobs) + i, path, fixed, file_index, r) for i, r in enumerate(ranges)]
        return jobs

    def run_job(self, job: Job, tmp: Path, progress: Any = None) -> PartResult:
        bad = BadLines()
        indexes = new_indexes(self.spec)
        ctx = BlockContext(self.spec, job.path, header_lines(self.spec.input), self.skip, bad,
                           self.tables, job.fixed_split, self.seed, job.file_index)
        prefix = f"part{job.index}."
        with Spill(tmp, len(indexes), prefix) as spill:
            for block in read_blocks(job.path, self.spec.input, self.needed,
                                     skip_bad_lines=self.skip, bad=bad,
                                     block_bytes=self.block_bytes, part=job.part):
                dec = decode_block(ctx, block)
                if progress is not None:
                    progress(len(block))
                train = dec.split == 0
                pids = np.empty((len(dec.labels), len(indexes)), dtype=np.int32)
                for j, (index, coded) in enumerate(zip(indexes, dec.fields)):
                    col = index.ids(coded)
                    index.count(col[train])
                    pids[:, j] = col
                spill.write(pids, dec.labels, dec.split, dec.lines)
        tables = [(list(ix.table), ix.counts[:len(ix.table)].copy()) for ix in indexes]
        return PartResult(prefix, spill.rows, tables, bad.count, bad.first)

    def scan(self, tmp: Path) -> Scan:
        jobs = self.jobs()
        results = self._run(jobs, tmp)
        merged = new_indexes(self.spec)
        parts, bad = [], BadLines()
        for res in results:
            maps = [index.merge(keys, counts) for index, (keys, counts) in zip(merged, res.tables)]
            parts.append((res.prefix, res.rows, maps))
            bad.count += res.bad_count
            bad.first = (bad.first + res.bad_first)[:20]
        if sum(sum(p[1].values()) for p in parts) == 0:
            raise DataError(f"{self.inputs[0][0]}: no data rows (expected at least one)")
        return Scan(merged, parts, bad)

    def _run(self, jobs: list[Job], tmp: Path) -> list[PartResult]:
        sequential = (len(jobs) == 1 or "fork" not in multiprocessing.get_all_start_methods()
                      or multiprocessing.current_process().daemon)
        bar = tqdm(total=None if sequential else len(jobs), desc="read", disable=self.quiet,
                   unit=" rows" if sequential else " parts", unit_scale=sequential)
        try:
            if sequential:
                return [self.run_job(job, tmp, bar.update) for job in jobs]
            _WORKER["scanner"], _WORKER["tmp"] = self, tmp
            ctx = multiprocessing.get_context("fork")
            procs = min(len(jobs), self.workers or os.cpu_count() or 1)
            with ctx.Pool(procs) as pool:
                results = []
                for res in pool.imap(_run_job, jobs):
                    results.append(res)
                    bar.update()
                return results
        finally:
            _WORKER.clear()
            bar.close()


_WORKER: dict[str, Any] = {}


def _run_job(job: Job) -> PartResult:
    import pyarrow

    pyarrow.set_cpu_count(1)  # the workers are the parallelism: no thread pool in each
    return _WORKER["scanner"].run_job(job, _WORKER["tmp"])
