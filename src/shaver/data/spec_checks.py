"""Checks of a dataset spec's values (each error names the key path and what is allowed).

The primitives check one value (``fields[3].discretiser``); :func:`check_names` checks
that the names of a parsed spec fit together: fields, input columns and join tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shaver.errors import ShaverError, SpecError, clipped, shown

if TYPE_CHECKING:
    from shaver.data.spec import DatasetSpec, FieldSpec


def yaml_text(path: Path) -> str:
    """A spec file's text (UTF-8; a leading byte-order mark is dropped)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02X} at offset "
                        f"{exc.start}); is this the right file?") from None


def yaml_error(path: Path, exc: Exception, error: type[ShaverError] = SpecError
               ) -> ShaverError:
    """A YAML syntax error as one line naming the file, line and column (as ``error``)."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return error(f"{path}: not valid YAML ({exc.reason}: #x{char:04x} at character "
                     f"{exc.position})")
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:  # pragma: no cover - PyYAML marks its other errors
        return error(f"{path}: not valid YAML ({' '.join(str(exc).split())})")
    return error(f"{path}:{mark.line + 1}: not valid YAML ({problem}, column "
                 f"{mark.column + 1})")


def found(value: Any) -> str:
    """How an unexpected value is described: its type, or 'nothing' for an empty entry."""
    return "nothing" if value is None else type(value).__name__


def check_keys(where: str, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping, found {found(data)}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise SpecError(
            f"{where}: unknown key {shown(unknown[0])} (expected one of {', '.join(allowed)})"
        )


def listed(where: str, value: Any, what: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise SpecError(f"{where}: expected a list of {what}, found {found(value)}")
    return list(value)


def number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where}: expected a number, found {shown(value)}")
    return float(value)


def flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: expected true or false, found {shown(value)}")
    return value


def choice(where: str, value: Any, options: tuple[str, ...]) -> str:
    if value is None:
        raise SpecError(f"{where}: missing (expected one of {', '.join(options)})")
    if value not in options:
        raise SpecError(f"{where}: {shown(value)} is not one of {', '.join(options)}")
    return str(value)


def integer(where: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{where}: expected an integer >= {low}, found {shown(value)}")
    return value


def check_names(spec: DatasetSpec, raw_fields: list[Any] | None = None) -> None:
    """Names that must match each other: fields, columns, join tables (key paths in errors).
    ``raw_fields`` (the fields as written) tell whether a field's column was written as
    ``column`` or comes from its ``name``; without them, ``column`` when it differs."""
    cols = spec.input.columns
    known = f"expected one of the input columns: {clipped(', '.join(cols))}"
    first: dict[str, int] = {}
    for i, f in enumerate(spec.fields):
        if f.name in first:
            raise SpecError(f"fields[{i}].name: field {shown(f.name)} is defined twice (also "
                            f"fields[{first[f.name]}])")
        first[f.name] = i
        if raw_fields is not None:
            written = isinstance(raw_fields[i], dict) and "column" in raw_fields[i]
        else:
            written = f.column != f.name
        column_key = "column" if written else "name"
        _field_column(spec, f, f"fields[{i}]", column_key, known)
    for i, j in enumerate(spec.joins):
        if cols and j.key not in cols:
            raise SpecError(f"joins[{i}].key: unknown column {shown(j.key)} ({known})")
    names = [j.name for j in spec.joins]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise SpecError(f"joins[{i}].name: join table {shown(name)} is defined twice")
    if cols and spec.label.column not in cols:
        raise SpecError(f"label.column: unknown column {shown(spec.label.column)} ({known})")
    if cols and spec.split.method == "column" and spec.split.column not in cols:
        raise SpecError(f"split.column: unknown column {shown(spec.split.column)} ({known})")


def _field_column(spec: DatasetSpec, f: FieldSpec, where: str, column_key: str,
                        known: str) -> None:
    joins = {j.name: j for j in spec.joins}
    if f.source:
        if f.source not in joins:
            raise SpecError(f"{where}.source: unknown join table {shown(f.source)} (expected one "
                            f"of {', '.join(joins) or 'the joins, but the spec has none'})")
        table = joins[f.source]
        if f.column not in table.columns:
            raise SpecError(f"{where}.{column_key}: join table {shown(f.source)} has no column "
                            f"{shown(f.column)} (its columns: "
                            f"{clipped(', '.join(table.columns))})")
    elif spec.input.columns and f.column not in spec.input.columns:
        hint = f"; set {where}.column to read another" if column_key == "name" else ""
        raise SpecError(f"{where}.{column_key}: unknown column {shown(f.column)} ({known}{hint})")
