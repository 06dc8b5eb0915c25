"""The results table and the report document: the contract between ``shaver bench`` (which
writes them) and ``shaver report`` (which draws them).

One **result row** per (dataset, model, method, budget, seed)::

    dataset         str    dataset name (e.g. "movielens-100k")
    model           str    model registry name ("deepfm", "dcn-mix", ...)
    method          str    "base", "shaver", "shaver-zero", "magnitude", "random", "taylor",
                           "ptq" (post-training quantisation), ...
    budget          str    human label of the budget ("sparsity=0.95", "int8", "full")
    seed            int    seed of the base model / attribution / random scorer
    sparsity        float  fraction of embedding entries replaced (0 for base and ptq)
    kept            int    kept embedding scalars (the authors' budget unit)
    total           int    all embedding scalars (n * d)
    table_bytes     int    exact bytes of the embedding table in the artifact (kept values,
                           index, scales, codebook), from the one size oracle for every row
    artifact_bytes  int|None  exact size of the deployable artifact file (table + head +
                           first-order weights + feature map + metadata), the same oracle
    auc, logloss    float  test metrics
    seconds         float  time to produce this model from the shared inputs (one new budget:
                           cut + codebook + evaluation setup; not the attribution itself)
    eval_seconds    float  time of the test evaluation
    finetuned       bool
    finetune_epochs int|None  fine-tuning epochs run (None: single-shot)
    kept_per_field  list[int]|None  kept scalars per field (for the per-field share plot)
    winner          str|None  method "auto": the candidate cut chosen on validation
    artifact_sha256 str|None  sha256 of the artifact ``shaver export`` writes for this cut
                           (the same file ``shaver prune`` / ``shaver fleet`` write for it)

The **report document** (``report.json``) is one JSON object::

    {"format": "shaver-report", "format_version": 1, "title": str,
     "results": [row, ...],
     "attributions": [{"dataset", "model", "seed", "placeholder", "samples", "seconds",
                       "tolerance", "field_names": [m], "mean_abs_phi": [[m x d]],
                       "trace": [{"samples": int, "seconds": float, "ratio": float}, ...]}],
     "timings": [{"dataset", "model", "step", "seconds", "note"}],
     "fields": {dataset: [field name, ...]},
     "environment": {str: JSON}, "commands": [str]}
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from shaver.errors import ShaverError
from shaver.fileio import check_format, write_text_atomic

REPORT_FORMAT = "shaver-report"
REPORT_FORMAT_VERSION = 1


class ReportError(ShaverError):
    """A results table or report document is missing, malformed or inconsistent."""


@dataclass
class ResultRow:
    """One cell of the benchmark grid: a compressed (or base) model and its measurements."""

    dataset: str
    model: str
    method: str
    budget: str
    seed: int
    sparsity: float
    kept: int
    total: int
    table_bytes: int
    artifact_bytes: int | None
    auc: float
    logloss: float
    seconds: float
    eval_seconds: float = 0.0
    finetuned: bool = False
    finetune_epochs: int | None = None
    kept_per_field: list[int] | None = field(default=None)
    winner: str | None = None
    artifact_sha256: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        """The identity of the cell: (dataset, model, method, budget, seed)."""
        return (self.dataset, self.model, self.method, self.budget, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "row") -> ResultRow:
        """Validate and build a row; the error names ``where`` and the offending column."""
        names = {f.name for f in fields(cls)}
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [n for n in required if n not in data]
        if missing:
            raise ReportError(f"{where}: missing column(s) {', '.join(missing)}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ReportError(f"{where}: unknown column(s) {', '.join(unknown)}")
        try:
            row = cls(**{k: _coerce(k, v) for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise ReportError(f"{where}: {exc}") from exc
        _check_row(row, where)
        return row


_INTS = {"seed", "kept", "total", "table_bytes"}
_FLOATS = {"sparsity", "auc", "logloss", "seconds", "eval_seconds"}
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))


def _coerce(name: str, value: Any) -> Any:
    if name in _INTS:
        return _as_int(name, value)
    if name in _FLOATS:
        return _as_float(name, value)
    if name in ("artifact_bytes", "finetune_epochs"):
        return None if value in (None, "") else _as_int(name, value)
    if name == "finetuned":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes")
        return bool(value)
    if name == "kept_per_field":
        if value in (None, ""):
            return None
        if isinstance(value, str):
            value = json.loads(value)
        return [_as_int(name, v) for v in value]
    if name in ("winner", "artifact_sha256"):
        return None if value in (None, "") else str(value)
    return str(value)


def _as_int(name: str, value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"column {name!r} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"column {name!r} must be an integer, got {value!r}")
    return int(number)


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"column {name!r} must be a number, got {value!r}") from None


def _check_row(row: ResultRow, where: str) -> None:
    if not 0.0 <= row.sparsity <= 1.0:
        raise ReportError(f"{where}: sparsity {row.sparsity} is outside [0, 1]")
    if not 0 <= row.kept <= row.total:
        raise ReportError(f"{where}: kept {row.kept} is outside [0, total={row.total}]")
    if math.isfinite(row.auc) and not 0.0 <= row.auc <= 1.0:
        raise ReportError(f"{where}: auc {row.auc} is outside [0, 1]")


# -- files ---------------------------------------------------------------------------------
def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically, creating its folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


def rows_to_csv(rows: Iterable[ResultRow]) -> str:
    """CSV text with a header of :data:`COLUMNS`; ``kept_per_field`` as a JSON list."""
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        data = row.to_dict()
        data["kept_per_field"] = (
            "" if row.kept_per_field is None else json.dumps(row.kept_per_field)
        )
        data["artifact_bytes"] = "" if row.artifact_bytes is None else row.artifact_bytes
        writer.writerow(data)
    return buf.getvalue()


def read_results_csv(path: str | os.PathLike[str]) -> list[ResultRow]:
    """Read a results CSV written by :func:`rows_to_csv` (validated, errors name the line)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            return [
                ResultRow.from_dict(rec, where=f"{path}:{i + 2}") for i, rec in enumerate(reader)
            ]
    except OSError as exc:
        raise ReportError(f"{path}: cannot read results ({exc.strerror})") from exc


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a torn last line (interrupted append) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break  # torn final line from an interrupted write: the cell is simply redone
            raise ReportError(f"{path}:{i + 1}: corrupt JSON line ({exc.msg})") from exc
    return records


def load_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a report document (``report.json``)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"{path}: cannot read the report document ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno})") from exc
    return validate_document(doc, where=str(path))


def validate_document(doc: Any, where: str = "report") -> dict[str, Any]:
    """Check the format tag and every result row; fill absent optional sections."""
    check_format(doc, fmt=REPORT_FORMAT, version=REPORT_FORMAT_VERSION, where=where,
                 error=ReportError)
    results = doc.get("results", [])
    doc["results"] = [
        r if isinstance(r, ResultRow) else ResultRow.from_dict(r, where=f"{where}: results[{i}]")
        for i, r in enumerate(results)
    ]
    for key in ("attributions", "timings", "commands"):
        doc.setdefault(key, [])
    doc.setdefault("environment", {})
    doc.setdefault("fields", {})
    doc.setdefault("title", "shaver report")
    return doc


def make_document(
    results: Sequence[ResultRow],
    *,
    title: str = "shaver report",
    attributions: Sequence[Mapping[str, Any]] = (),
    timings: Sequence[Mapping[str, Any]] = (),
    environment: Mapping[str, Any] | None = None,
    commands: Sequence[str] = (),
    fields: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Assemble a report document (rows as :class:`ResultRow`)."""
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "title": title,
        "results": list(results),
        "attributions": [dict(a) for a in attributions],
        "timings": [dict(t) for t in timings],
        "environment": dict(environment or {}),
        "commands": list(commands),
        "fields": {k: list(v) for k, v in (fields or {}).items()},
    }


def document_to_json(doc: Mapping[str, Any]) -> str:
    """Serialise a document (rows become dicts)."""
    out = dict(doc)
    out["results"] = [r.to_dict() if isinstance(r, ResultRow) else r for r in doc["results"]]
    return json.dumps(out, indent=1, allow_nan=True) + "\n"
