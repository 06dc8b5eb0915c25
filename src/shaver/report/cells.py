"""Resumable storage of benchmark cells: one JSON line per finished (dataset, model, method,
budget, seed) cell, appended and fsynced, so a killed run loses at most the cell in flight."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from shaver.report.schema import ResultRow, atomic_write_text, read_jsonl


class CellStore:
    """The finished cells of one benchmark folder (``cells.jsonl``)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        records = read_jsonl(self.path)
        self.rows: dict[tuple, ResultRow] = {}
        for i, rec in enumerate(records):
            row = ResultRow.from_dict(rec, where=f"{self.path}: cell {i + 1}")
            self.rows[row.key] = row
        # Rewrite without a torn last line (or duplicates) before appending to it again.
        if self.path.exists() and len(records) != len(self.path.read_text().splitlines()):
            atomic_write_text(self.path, "".join(_line(r) for r in self.rows.values()))

    def __contains__(self, key: tuple) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: ResultRow) -> None:
        """Record a finished cell durably (append + flush + fsync)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(_line(row))
            f.flush()
            os.fsync(f.fileno())
        self.rows[row.key] = row

    def add_all(self, rows: Iterable[ResultRow]) -> None:
        for row in rows:
            self.add(row)


def _line(row: ResultRow) -> str:
    return json.dumps(row.to_dict(), allow_nan=True) + "\n"
