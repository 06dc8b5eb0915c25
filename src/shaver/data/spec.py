"""The dataset spec: how raw rows become fields (YAML, in the spirit of FuxiCTR's feature specs).

A spec names the input format, the label and how to derive a 0/1 label from it, the fields
(categorical, or numeric with a discretiser, or derived from another column), the min-count
below which a value maps to its field's OOV id, optional side tables joined on a key, and the
split. Example (the built-in ``criteo`` preset, abridged)::

    name: criteo
    input: {format: tsv, header: false, columns: [label, I1, ..., C26]}
    label: {column: label, rule: binary}
    min_count: 10
    fields:
      - {name: I1, kind: numeric, discretiser: criteo}
      - {name: C1}
    split: {method: random, fractions: [0.8, 0.1, 0.1], seed: 2024}

Every value is read as text. A field's token is the text itself (categorical), a discretised
token (numeric) or a derived token; the empty text (missing) is a token of its own.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shaver.data.times import TIME_DERIVATIONS, TIME_FORMATS, check_time_format
from shaver.errors import SpecError

FORMATS = ("tsv", "csv", "parquet", "libfm")
KINDS = ("categorical", "numeric")
DISCRETISERS = ("criteo", "log2", "quantile")
DERIVATIONS = ("hour_of_day", "weekday", "first_token", "libfm_index")
LABEL_RULES = ("binary", "positive", "threshold")
SPLIT_METHODS = ("random", "column", "files")


def _check_keys(where: str, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping, found {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise SpecError(
            f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(allowed)})"
        )


def _choice(where: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(options)}")
    return str(value)


@dataclass(frozen=True)
class InputSpec:
    """Raw file layout. ``header``: True (first line names the columns), False, or "skip"
    (a first line to ignore; ``columns`` names them). Parquet files carry their names."""

    format: str = "tsv"
    header: bool | str = False
    columns: tuple[str, ...] = ()
    delimiter: str | None = None

    @property
    def sep(self) -> str:
        if self.delimiter is not None:
            return self.delimiter
        return {"tsv": "\t", "csv": ",", "libfm": " "}.get(self.format, "\t")


@dataclass(frozen=True)
class LabelSpec:
    """``binary``: the column must be 0 or 1. ``positive``: a non-negative integer count,
    label = count > 0 (KDD12 clicks). ``threshold``: a number, label = value >= threshold."""

    column: str = "label"
    rule: str = "binary"
    threshold: float = 1.0


@dataclass(frozen=True)
class FieldSpec:
    """One model field. ``column`` defaults to ``name``. ``derive`` computes the token from
    the column (``hour_of_day``/``weekday`` of a time, ``first_token`` of a
    space-separated list, ``libfm_index`` of an ``index:value`` pair). ``format`` is the
    time's format (``avazu`` YYMMDDHH when absent, ``iso``, ``epoch``, ``epoch_ms`` or a
    strptime pattern; see :mod:`shaver.data.times`). ``min_count`` overrides the
    spec-wide one. ``bins`` is for the quantile discretiser."""

    name: str
    column: str = ""
    kind: str = "categorical"
    discretiser: str | None = None
    bins: int = 10
    derive: str | None = None
    min_count: int | None = None
    source: str = ""  # name of a join table, or "" for the main input
    format: str | None = None  # time format of hour_of_day / weekday (None: avazu)


@dataclass(frozen=True)
class JoinSpec:
    """A side table joined on ``key`` (a main-input column) = its ``table_key`` column.
    ``path`` (relative to the main input's folder) can be overridden at prepare time.
    ``optional``: when the file is absent, the fields drawn from it are left out."""

    name: str
    path: str
    key: str
    table_key: str
    columns: tuple[str, ...]
    format: str = "tsv"
    header: bool | str = False
    optional: bool = False


@dataclass(frozen=True)
class SplitSpec:
    """``random``: each row independently to train/val/test with ``fractions`` (seeded).
    ``column``: rows whose ``column`` >= ``test_from`` go to test, >= ``val_from`` to val,
    the rest to train (compared as numbers when both sides are numbers).
    ``files``: one input file per split (train, val, test)."""

    method: str = "random"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2024
    column: str = ""
    val_from: str = ""
    test_from: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A validated dataset spec. Build it with :meth:`from_dict`, :meth:`load` or
    :func:`shaver.data.presets.load_preset`."""

    name: str
    input: InputSpec
    label: LabelSpec
    fields: tuple[FieldSpec, ...]
    min_count: int = 1
    joins: tuple[JoinSpec, ...] = ()
    split: SplitSpec = field(default_factory=SplitSpec)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def min_count_of(self, f: FieldSpec) -> int:
        return self.min_count if f.min_count is None else f.min_count

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples); ``from_dict(to_dict())`` round-trips.
        A field without a time ``format`` has no such key (as before formats existed)."""
        data = json.loads(json.dumps(asdict(self)))
        for f in data["fields"]:
            if f["format"] is None:
                del f["format"]
        return data

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DatasetSpec:
        """Read a YAML spec file."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise SpecError(f"{path}: cannot read the spec ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML ({exc})") from exc
        try:
            return cls.from_dict(data)
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        """Validate a spec given as a mapping (as read from YAML or meta.json)."""
        _check_keys("spec", data, ("name", "input", "label", "fields", "min_count", "joins",
                                   "split"))
        inp = _parse_input(data.get("input", {}))
        label = _parse_label(data.get("label", {}))
        joins = tuple(_parse_join(j, i) for i, j in enumerate(data.get("joins") or ()))
        raw_fields = data.get("fields")
        if not raw_fields:
            raise SpecError("spec: 'fields' must list at least one field")
        fields = tuple(_parse_field(f, i) for i, f in enumerate(raw_fields))
        spec = cls(
            name=str(data.get("name", "custom")),
            input=inp,
            label=label,
            fields=fields,
            min_count=_int("spec.min_count", data.get("min_count", 1), low=1),
            joins=joins,
            split=_parse_split(data.get("split", {})),
        )
        _cross_check(spec)
        return spec


def _int(where: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{where}: expected an integer >= {low}, found {value!r}")
    return value


def _parse_input(d: dict[str, Any]) -> InputSpec:
    _check_keys("input", d, ("format", "header", "columns", "delimiter"))
    fmt = _choice("input.format", d.get("format", "tsv"), FORMATS)
    header = d.get("header", False)
    if not (isinstance(header, bool) or header == "skip"):
        raise SpecError(f"input.header: expected true, false or 'skip', found {header!r}")
    columns = tuple(str(c) for c in d.get("columns") or ())
    if fmt in ("tsv", "csv", "libfm") and header is not True and not columns:
        raise SpecError("input.columns: required when the file has no header line")
    if len(set(columns)) != len(columns):
        raise SpecError("input.columns: column names must be unique")
    return InputSpec(format=fmt, header=header, columns=columns, delimiter=d.get("delimiter"))


def _parse_label(d: dict[str, Any]) -> LabelSpec:
    _check_keys("label", d, ("column", "rule", "threshold"))
    rule = _choice("label.rule", d.get("rule", "binary"), LABEL_RULES)
    return LabelSpec(column=str(d.get("column", "label")), rule=rule,
                     threshold=float(d.get("threshold", 1.0)))


def _parse_field(d: Any, i: int) -> FieldSpec:
    if isinstance(d, str):
        d = {"name": d}
    where = f"fields[{i}]"
    _check_keys(where, d, ("name", "column", "kind", "discretiser", "bins", "derive",
                           "min_count", "source", "format"))
    if "name" not in d:
        raise SpecError(f"{where}: missing 'name'")
    kind = _choice(f"{where}.kind", d.get("kind", "categorical"), KINDS)
    disc = d.get("discretiser")
    if kind == "numeric":
        disc = _choice(f"{where}.discretiser", disc, DISCRETISERS)
    elif disc is not None:
        raise SpecError(f"{where}: a discretiser needs kind: numeric")
    derive = d.get("derive")
    if derive is not None:
        derive = _choice(f"{where}.derive", derive, DERIVATIONS)
    fmt = d.get("format")
    if fmt is not None and derive not in TIME_DERIVATIONS:
        raise SpecError(f"{where}: a format needs derive: {' or '.join(TIME_DERIVATIONS)}")
    if fmt is not None and check_time_format(fmt) is None:
        raise SpecError(f"{where}.format: {fmt!r} is not one of {', '.join(TIME_FORMATS)} "
                        "nor a strptime pattern (with %)")
    mc = d.get("min_count")
    return FieldSpec(
        name=str(d["name"]), column=str(d.get("column", d["name"])), kind=kind,
        discretiser=disc, bins=_int(f"{where}.bins", d.get("bins", 10), low=2),
        derive=derive, min_count=None if mc is None else _int(f"{where}.min_count", mc, 1),
        source=str(d.get("source", "")), format=fmt,
    )


def _parse_join(d: dict[str, Any], i: int) -> JoinSpec:
    where = f"joins[{i}]"
    _check_keys(where, d, ("name", "path", "key", "table_key", "columns", "format", "header",
                           "optional"))
    for key in ("name", "path", "key", "columns"):
        if key not in d:
            raise SpecError(f"{where}: missing {key!r}")
    columns = tuple(str(c) for c in d["columns"])
    header = d.get("header", False)
    if not (isinstance(header, bool) or header == "skip"):
        raise SpecError(f"{where}.header: expected true, false or 'skip', found {header!r}")
    return JoinSpec(
        name=str(d["name"]), path=str(d["path"]), key=str(d["key"]),
        table_key=str(d.get("table_key", columns[0])), columns=columns,
        format=_choice(f"{where}.format", d.get("format", "tsv"), ("tsv", "csv")),
        header=header, optional=bool(d.get("optional", False)),
    )


def _parse_split(d: dict[str, Any]) -> SplitSpec:
    _check_keys("split", d, ("method", "fractions", "seed", "column", "val_from", "test_from"))
    method = _choice("split.method", d.get("method", "random"), SPLIT_METHODS)
    fr = tuple(float(x) for x in d.get("fractions", (0.8, 0.1, 0.1)))
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-9:
        raise SpecError(f"split.fractions: expected three non-negative numbers summing to 1, "
                        f"found {list(fr)}")
    if method == "column" and not (d.get("column") and "test_from" in d and "val_from" in d):
        raise SpecError("split: method 'column' needs 'column', 'val_from' and 'test_from'")
    return SplitSpec(method=method, fractions=fr,  # type: ignore[arg-type]
                     seed=_int("split.seed", d.get("seed", 2024), low=0),
                     column=str(d.get("column", "")), val_from=str(d.get("val_from", "")),
                     test_from=str(d.get("test_from", "")))


def _cross_check(spec: DatasetSpec) -> None:
    names = spec.field_names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"fields: field {dup[0]!r} is defined twice")
    joins = {j.name: j for j in spec.joins}
    cols = set(spec.input.columns)
    for f in spec.fields:
        if f.source:
            if f.source not in joins:
                raise SpecError(f"field {f.name!r}: unknown join table {f.source!r}")
            if f.column not in joins[f.source].columns:
                raise SpecError(f"field {f.name!r}: join table {f.source!r} has no column "
                                f"{f.column!r}")
        elif cols and f.column not in cols:
            raise SpecError(f"field {f.name!r}: unknown column {f.column!r} "
                            f"(input columns: {', '.join(spec.input.columns)})")
    for j in spec.joins:
        if cols and j.key not in cols:
            raise SpecError(f"join {j.name!r}: unknown key column {j.key!r}")
    if cols and spec.label.column not in cols:
        raise SpecError(f"label: unknown column {spec.label.column!r}")
    if cols and spec.split.method == "column" and spec.split.column not in cols:
        raise SpecError(f"split: unknown column {spec.split.column!r}")
