"""Pass 1 (count): read the raw text once, in parallel parts, into provisional ids.

Each input file is one part, or for quote-free text (TSV, libfm) several byte ranges cut
at line boundaries, read by worker processes. A part numbers its tokens in order of first
appearance (:class:`~shaver.data.vocab.Vocabularies`), counts them on the train split (every
value of a list field counts) and spills its rows (see :mod:`spill`). The
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

from shaver.data.decode import BlockContext, decode_block
from shaver.data.readers import (
    BadLines,
    coded_blocks,
    header_lines,
    read_blocks,
)
from shaver.data.spec import DatasetSpec
from shaver.data.spill import Spill
from shaver.data.stages import prefetched
from shaver.data.textin import TextRange, compression, split_ranges
from shaver.data.vocab import Vocabularies
from shaver.errors import DataError
from shaver.progress import progress_bar

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
    vocab: Vocabularies
    values: dict[int, dict[str, int]] = field(default_factory=dict)
    bad_count: int = 0
    bad_first: list[str] = field(default_factory=list)


@dataclass
class Scan:
    """What pass 1 hands to pass 2."""

    vocab: Vocabularies
    # prefix, rows, part pid -> pid, bag values per bag field per split
    parts: list[tuple[str, dict[str, int], np.ndarray, dict[int, dict[str, int]]]]
    bad: BadLines


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
            if (n > 1 and self.spec.input.format in ("tsv", "libfm") and path.is_file()
                    and compression(path) is None):  # compressed bytes cannot be cut
                parts = n if self.workers is not None else min(
                    n, path.stat().st_size // MIN_PART_BYTES)
                if parts > 1:
                    ranges = list(split_ranges(path, parts, header_lines(self.spec.input)))
            jobs += [Job(len(jobs) + i, path, fixed, file_index, r) for i, r in enumerate(ranges)]
        return jobs

    def run_job(self, job: Job, tmp: Path, progress: Any = None) -> PartResult:
        bad = BadLines()
        vocab = Vocabularies()
        ctx = BlockContext(self.spec, job.path, header_lines(self.spec.input), self.skip, bad,
                           self.tables, job.fixed_split, self.seed, job.file_index)
        prefix = f"part{job.index}."
        layout = self.spec.layout
        single = [int(j) for j in layout.single_fields]
        with Spill(tmp, len(single), prefix, layout.bags) as spill:
            blocks = read_blocks(job.path, self.spec.input, self.needed,
                                 skip_bad_lines=self.skip, bad=bad,
                                 block_bytes=self.block_bytes, part=job.part)
            # parse | encode and decode | number: three threads, each stage's errors raised
            # in block order (with skipped lines, noted in order, all in this thread)
            stage = (lambda b: b) if self.skip else prefetched
            decoded = ((len(block), decode_block(ctx, block))
                       for block in coded_blocks(stage(blocks), self.needed))
            for size, dec in stage(decoded):
                if progress is not None:
                    progress(size)
                train = dec.split == 0
                pids = vocab.add([dec.fields[j] for j in single], train, single)
                bags = {}
                for b in layout.bags:
                    lengths, values, weights = dec.fields[b.field].flat()
                    vpids = vocab.add([values], np.repeat(train, lengths), [b.field])
                    bags[b.field] = (lengths, vpids.reshape(-1), weights)
                spill.write(pids, dec.labels, dec.split, dec.lines, bags)
        return PartResult(prefix, spill.rows, vocab, spill.values, bad.count, bad.first)

    def scan(self, tmp: Path) -> Scan:
        jobs = self.jobs()
        results = self._run(jobs, tmp)
        merged = results[0].vocab  # the first part's ids stay; the others are added
        parts, bad = [], BadLines()
        for res in results:
            same = res.vocab is merged
            parts.append((res.prefix, res.rows,
                          np.arange(len(merged)) if same else merged.merge(res.vocab),
                          res.values))
            bad.count += res.bad_count
            bad.first = (bad.first + res.bad_first)[:20]
        if sum(sum(p[1].values()) for p in parts) == 0:
            raise DataError(f"{self.inputs[0][0]}: no data rows (expected at least one)")
        return Scan(merged, parts, bad)

    def _run(self, jobs: list[Job], tmp: Path) -> list[PartResult]:
        sequential = (len(jobs) == 1 or "fork" not in multiprocessing.get_all_start_methods()
                      or multiprocessing.current_process().daemon)
        with progress_bar(total=None if sequential else len(jobs), desc="read",
                          disable=self.quiet, unit=" rows" if sequential else " parts",
                          unit_scale=sequential) as bar:  # an error: no 'done' line
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


_WORKER: dict[str, Any] = {}


def _run_job(job: Job) -> PartResult:
    import pyarrow

    pyarrow.set_cpu_count(1)  # the workers are the parallelism: no thread pool in each
    return _WORKER["scanner"].run_job(job, _WORKER["tmp"])
