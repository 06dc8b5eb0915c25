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

A ``list`` field (a *bag*: movie genres, a click history, query tokens) reads a column whose
text is a list of values joined by ``separator``; each value is a token of the field, and the
model pools the field's embeddings of a row's values (see :mod:`shaver.layout`)::

    - {name: genres, column: class, kind: list, separator: "|", max_len: 6, keep: first,
       pooling: mean, weighted: false}

``separator``: one character (default ``|``). ``max_len`` (default 32): a longer list is cut
to its first (``keep: first``, the default) or last (``keep: last``) ``max_len`` values,
never refused. ``pooling``: ``mean`` (default) or ``sum``. ``weighted: true``: each value is
spelled ``value:weight`` (a finite number; not negative with mean pooling). The empty text
is the empty list; empty values (``a||b``) are dropped; duplicates are kept, in list order.
A list may come from a joined side table (``source``) like any other field.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shaver.data.spec_checks import (
    check_keys,
    check_names,
    choice,
    flag,
    integer,
    listed,
    number,
    yaml_error,
    yaml_text,
)
from shaver.data.times import TIME_DERIVATIONS, TIME_FORMATS, check_time_format
from shaver.errors import SpecError, shown
from shaver.fileio import load_yaml
from shaver.layout import KEEPS, POOLINGS, Bag, FieldLayout

FORMATS = ("tsv", "csv", "parquet", "libfm")
KINDS = ("categorical", "numeric", "list")
#: The keys only list fields take (dropped from :meth:`DatasetSpec.to_dict` for others).
LIST_KEYS = ("separator", "max_len", "keep", "pooling", "weighted")
DISCRETISERS = ("criteo", "log2", "quantile")
DERIVATIONS = ("hour_of_day", "weekday", "first_token", "libfm_index")
LABEL_RULES = ("binary", "positive", "threshold")
SPLIT_METHODS = ("random", "column", "files")


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
    spec-wide one. ``bins`` is for the quantile discretiser. ``separator``, ``max_len``,
    ``keep``, ``pooling`` and ``weighted`` are for list fields (module docstring)."""

    name: str
    column: str = ""
    kind: str = "categorical"
    discretiser: str | None = None
    bins: int = 10
    derive: str | None = None
    min_count: int | None = None
    source: str = ""  # name of a join table, or "" for the main input
    format: str | None = None  # time format of hour_of_day / weekday (None: avazu)
    separator: str = "|"
    max_len: int = 32
    keep: str = "first"
    pooling: str = "mean"
    weighted: bool = False

    @property
    def is_list(self) -> bool:
        return self.kind == "list"


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

    @property
    def layout(self) -> FieldLayout:
        """Slots of the fields: each list field is a bag (:mod:`shaver.layout`)."""
        return FieldLayout(len(self.fields), tuple(
            Bag(i, f.max_len, f.pooling, f.weighted, f.keep)
            for i, f in enumerate(self.fields) if f.is_list))

    def min_count_of(self, f: FieldSpec) -> int:
        return self.min_count if f.min_count is None else f.min_count

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples); ``from_dict(to_dict())`` round-trips.
        A field without a time ``format`` has no such key (as before formats existed), nor
        has a field that is not a list the list keys (as before lists existed)."""
        data = json.loads(json.dumps(asdict(self)))
        for f in data["fields"]:
            if f["format"] is None:
                del f["format"]
            if f["kind"] != "list":
                for key in LIST_KEYS:
                    del f[key]
        return data

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DatasetSpec:
        """Read a YAML spec file."""
        path = Path(path)
        try:
            data = load_yaml(yaml_text(path), path, SpecError)
        except OSError as exc:
            raise SpecError(f"{path}: cannot read the spec ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise yaml_error(path, exc) from None
        try:
            return cls.from_dict(data)
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        """Validate a spec given as a mapping (as read from YAML or meta.json)."""
        check_keys("spec", data, ("name", "input", "label", "fields", "min_count", "joins",
                                   "split"))
        inp = _parse_input(data.get("input", {}))
        label = _parse_label(data.get("label", {}))
        joins = tuple(_parse_join(j, i)
                      for i, j in enumerate(listed("joins", data.get("joins") or [], "tables")))
        raw_fields = data.get("fields")
        if not raw_fields:
            raise SpecError("spec: 'fields' must list at least one field")
        raw_fields = listed("fields", raw_fields, "fields")
        fields = tuple(_parse_field(f, i) for i, f in enumerate(raw_fields))
        spec = cls(
            name=str(data.get("name", "custom")),
            input=inp,
            label=label,
            fields=fields,
            min_count=integer("spec.min_count", data.get("min_count", 1), low=1),
            joins=joins,
            split=_parse_split(data.get("split", {})),
        )
        check_names(spec, raw_fields)
        return spec


def _parse_input(d: dict[str, Any]) -> InputSpec:
    check_keys("input", d, ("format", "header", "columns", "delimiter"))
    fmt = choice("input.format", d.get("format", "tsv"), FORMATS)
    header = d.get("header", False)
    if not (isinstance(header, bool) or header == "skip"):
        raise SpecError(f"input.header: expected true, false or 'skip', found {shown(header)}")
    columns = tuple(str(c) for c in
                    listed("input.columns", d.get("columns") or [], "column names"))
    delimiter = d.get("delimiter")
    if delimiter is not None and not (isinstance(delimiter, str) and len(delimiter) == 1):
        raise SpecError(f"input.delimiter: expected one character, found {shown(delimiter)}")
    if fmt in ("tsv", "csv", "libfm") and header is not True and not columns:
        raise SpecError("input.columns: required when the file has no header line")
    if len(set(columns)) != len(columns):
        raise SpecError("input.columns: column names must be unique")
    return InputSpec(format=fmt, header=header, columns=columns, delimiter=delimiter)


def _parse_label(d: dict[str, Any]) -> LabelSpec:
    check_keys("label", d, ("column", "rule", "threshold"))
    rule = choice("label.rule", d.get("rule", "binary"), LABEL_RULES)
    return LabelSpec(column=str(d.get("column", "label")), rule=rule,
                     threshold=number("label.threshold", d.get("threshold", 1.0)))


def _parse_field(d: Any, i: int) -> FieldSpec:
    if isinstance(d, str):
        d = {"name": d}
    where = f"fields[{i}]"
    check_keys(where, d, ("name", "column", "kind", "discretiser", "bins", "derive",
                           "min_count", "source", "format", *LIST_KEYS))
    if "name" not in d:
        raise SpecError(f"{where}: missing 'name'")
    if d["name"] is None or d["name"] == "" or isinstance(d["name"], dict | list | bool):
        raise SpecError(f"{where}.name: expected a name, found {shown(d['name'])}")
    kind = choice(f"{where}.kind", d.get("kind", "categorical"), KINDS)
    disc = d.get("discretiser")
    if kind == "numeric":
        disc = choice(f"{where}.discretiser", disc, DISCRETISERS)
    elif disc is not None:
        raise SpecError(f"{where}.discretiser: only numeric fields take one (set kind: numeric)")
    if d.get("bins", FieldSpec.bins) != FieldSpec.bins and disc != "quantile":
        raise SpecError(f"{where}.bins: only the quantile discretiser takes bins")
    derive = d.get("derive")
    if derive is not None:
        derive = choice(f"{where}.derive", derive, DERIVATIONS)
    fmt = d.get("format")
    if fmt is not None and derive not in TIME_DERIVATIONS:
        raise SpecError(f"{where}.format: a format needs derive: "
                        f"{' or '.join(TIME_DERIVATIONS)}")
    if fmt is not None and check_time_format(fmt) is None:
        raise SpecError(f"{where}.format: {shown(fmt)} is not one of {', '.join(TIME_FORMATS)} "
                        "nor a strptime pattern (with %)")
    mc = d.get("min_count")
    return FieldSpec(
        name=str(d["name"]), column=str(d.get("column", d["name"])), kind=kind,
        discretiser=disc, bins=integer(f"{where}.bins", d.get("bins", 10), low=2),
        derive=derive, min_count=None if mc is None else integer(f"{where}.min_count", mc, 1),
        source=str(d.get("source", "")), format=fmt, **_list_keys(d, where, kind, derive),
    )


def _list_keys(d: dict[str, Any], where: str, kind: str, derive: str | None) -> dict[str, Any]:
    """The list keys of a field (only list fields take them; see the module docstring)."""
    given = [key for key in LIST_KEYS if key in d]
    if kind != "list":
        if given:
            raise SpecError(f"{where}.{given[0]}: only list fields take one (set kind: list)")
        return {}
    if derive is not None:
        raise SpecError(f"{where}.derive: a list field takes no derive (its values are the "
                        "tokens)")
    sep = d.get("separator", FieldSpec.separator)
    if not (isinstance(sep, str) and len(sep) == 1):
        raise SpecError(f"{where}.separator: expected one character, found {shown(sep)}")
    weighted = flag(f"{where}.weighted", d.get("weighted", False))
    if weighted and sep == ":":
        raise SpecError(f"{where}.separator: ':' separates a weighted value from its weight "
                        "(choose another separator)")
    return {"separator": sep,
            "max_len": integer(f"{where}.max_len", d.get("max_len", FieldSpec.max_len), low=1),
            "keep": choice(f"{where}.keep", d.get("keep", FieldSpec.keep), KEEPS),
            "pooling": choice(f"{where}.pooling", d.get("pooling", FieldSpec.pooling),
                              POOLINGS),
            "weighted": weighted}


def _parse_join(d: dict[str, Any], i: int) -> JoinSpec:
    where = f"joins[{i}]"
    check_keys(where, d, ("name", "path", "key", "table_key", "columns", "format", "header",
                           "optional"))
    for key in ("name", "path", "key", "columns"):
        if key not in d:
            raise SpecError(f"{where}: missing {shown(key)}")
    columns = tuple(str(c) for c in listed(f"{where}.columns", d["columns"], "column names"))
    if not columns:
        raise SpecError(f"{where}.columns: expected a list of column names, found []")
    table_key = str(d.get("table_key", columns[0]))
    if table_key not in columns:
        raise SpecError(f"{where}.table_key: {shown(table_key)} is not one of its columns "
                        f"({', '.join(columns)})")
    header = d.get("header", False)
    if not (isinstance(header, bool) or header == "skip"):
        raise SpecError(f"{where}.header: expected true, false or 'skip', found {shown(header)}")
    return JoinSpec(
        name=str(d["name"]), path=str(d["path"]), key=str(d["key"]),
        table_key=table_key, columns=columns,
        format=choice(f"{where}.format", d.get("format", "tsv"), ("tsv", "csv")),
        header=header, optional=flag(f"{where}.optional", d.get("optional", False)),
    )


def _parse_split(d: dict[str, Any]) -> SplitSpec:
    check_keys("split", d, ("method", "fractions", "seed", "column", "val_from", "test_from"))
    method = choice("split.method", d.get("method", "random"), SPLIT_METHODS)
    fr = d.get("fractions", (0.8, 0.1, 0.1))
    if not (isinstance(fr, list | tuple) and len(fr) == 3
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in fr)
            and min(fr) >= 0 and abs(sum(fr) - 1.0) <= 1e-9):
        raise SpecError(f"split.fractions: expected three non-negative numbers summing to 1, "
                        f"found {shown(list(fr) if isinstance(fr, tuple) else fr)}")
    fr = tuple(float(x) for x in fr)
    if method == "column":
        for key in ("column", "val_from", "test_from"):
            if d.get(key) in (None, ""):
                raise SpecError(f"split.{key}: required by method 'column' (split.column "
                                f"names the column; rows >= split.val_from go to val, "
                                f">= split.test_from to test)")
    return SplitSpec(method=method, fractions=fr,  # type: ignore[arg-type]
                     seed=integer("split.seed", d.get("seed", 2024), low=0),
                     column=str(d.get("column", "")), val_from=str(d.get("val_from", "")),
                     test_from=str(d.get("test_from", "")))
