"""Dataset spec validation: every rule, with its exact message; presets round-trip."""

from __future__ import annotations

import copy

import pytest
import yaml

from shaver.data.presets import load_preset, preset_names
from shaver.data.spec import DatasetSpec
from shaver.errors import SpecError

BASE = {
    "name": "t",
    "input": {"format": "tsv", "columns": ["y", "a", "b", "k"]},
    "label": {"column": "y"},
    "fields": ["a", {"name": "b", "kind": "numeric", "discretiser": "log2"}],
    "joins": [{"name": "side", "path": "s.txt", "key": "k", "columns": ["k", "g"]}],
    "split": {"method": "random", "fractions": [0.8, 0.1, 0.1], "seed": 3},
}


def with_change(path: str, value):
    spec = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


COLUMNS = "expected one of the input columns: y, a, b, k"


@pytest.mark.parametrize("path,value,message", [
    ("colour", 1, "spec: unknown key 'colour' (expected one of name, input, label, fields, "
                  "min_count, joins, split)"),
    ("input", [1], "input: expected a mapping, found list"),
    ("input", None, "input: expected a mapping, found nothing"),
    ("input.format", "xlsx", "input.format: 'xlsx' is not one of tsv, csv, parquet, libfm"),
    ("input.format", None, "input.format: missing (expected one of tsv, csv, parquet, libfm)"),
    ("input.header", "yes", "input.header: expected true, false or 'skip', found 'yes'"),
    ("input.columns", [], "input.columns: required when the file has no header line"),
    ("input.columns", "y,a,b,k", "input.columns: expected a list of column names, found str"),
    ("input.columns", ["y", "a", "a", "k"], "input.columns: column names must be unique"),
    ("input.delimiter", ", ", "input.delimiter: expected one character, found ', '"),
    ("input.delimiter", 9, "input.delimiter: expected one character, found 9"),
    ("label", "y", "label: expected a mapping, found str"),
    ("label.rule", "ctr", "label.rule: 'ctr' is not one of binary, positive, threshold"),
    ("label.threshold", "4", "label.threshold: expected a number, found '4'"),
    ("label.column", "click", f"label.column: unknown column 'click' ({COLUMNS})"),
    ("fields", [], "spec: 'fields' must list at least one field"),
    ("fields", "a", "fields: expected a list of fields, found str"),
    ("fields", {"name": "a"}, "fields: expected a list of fields, found dict"),
    ("fields.0", 3, "fields[0]: expected a mapping, found int"),
    ("fields.0", {"name": "a", "colour": "red"}, "fields[0]: unknown key 'colour' (expected one "
     "of name, column, kind, discretiser, bins, derive, min_count, source, format, separator, "
     "max_len, keep, pooling, weighted)"),
    ("fields.0", {"column": "a"}, "fields[0]: missing 'name'"),
    ("fields.0", {"name": None}, "fields[0].name: expected a name, found None"),
    ("fields.0", {"name": ""}, "fields[0].name: expected a name, found ''"),
    ("fields.0", {"name": "a", "kind": "text"}, "fields[0].kind: 'text' is not one of "
                                                "categorical, numeric, list"),
    ("fields.1", {"name": "b", "kind": "numeric"}, "fields[1].discretiser: missing (expected one "
                                                   "of criteo, log2, quantile)"),
    ("fields.1", {"name": "b", "kind": "numeric", "discretiser": "log10"},
     "fields[1].discretiser: 'log10' is not one of criteo, log2, quantile"),
    ("fields.0", {"name": "a", "discretiser": "log2"}, "fields[0].discretiser: only numeric "
                                                       "fields take one (set kind: numeric)"),
    ("fields.0", {"name": "a", "derive": "month"}, "fields[0].derive: 'month' is not one of "
                                                   "hour_of_day, weekday, first_token, libfm_index"),
    ("fields.1", {"name": "b", "kind": "numeric", "discretiser": "quantile", "bins": 1},
     "fields[1].bins: expected an integer >= 2, found 1"),
    ("fields.1", {"name": "b", "kind": "numeric", "discretiser": "log2", "bins": 5},
     "fields[1].bins: only the quantile discretiser takes bins"),
    ("fields.0", {"name": "a", "min_count": 0}, "fields[0].min_count: expected an integer >= 1, "
                                                "found 0"),
    ("fields.1", "a", "fields[1].name: field 'a' is defined twice (also fields[0])"),
    ("fields.0", {"name": "z"}, f"fields[0].name: unknown column 'z' ({COLUMNS}; set "
                                "fields[0].column to read another)"),
    ("fields.0", {"name": "z", "column": "zz"}, f"fields[0].column: unknown column 'zz' "
                                                f"({COLUMNS})"),
    ("fields.0", {"name": "g", "source": "other"}, "fields[0].source: unknown join table "
                                                   "'other' (expected one of side)"),
    ("fields.0", {"name": "g2", "column": "zz", "source": "side"},
     "fields[0].column: join table 'side' has no column 'zz' (its columns: k, g)"),
    ("fields.0", {"name": "zz", "source": "side"},
     "fields[0].name: join table 'side' has no column 'zz' (its columns: k, g)"),
    ("min_count", 1.5, "spec.min_count: expected an integer >= 1, found 1.5"),
    ("min_count", True, "spec.min_count: expected an integer >= 1, found True"),
    ("joins", {"name": "side"}, "joins: expected a list of tables, found dict"),
    ("joins.0", {"name": "side", "path": "s"}, "joins[0]: missing 'key'"),
    ("joins.0", {"name": "side", "path": "s", "key": "k", "columns": "k"},
     "joins[0].columns: expected a list of column names, found str"),
    ("joins.0", {"name": "side", "path": "s", "key": "k", "columns": []},
     "joins[0].columns: expected a list of column names, found []"),
    ("joins.0", {"name": "side", "path": "s", "key": "k", "columns": ["k"], "table_key": "id"},
     "joins[0].table_key: 'id' is not one of its columns (k)"),
    ("joins.0", {"name": "side", "path": "s", "key": "k", "columns": ["k"], "header": 1},
     "joins[0].header: expected true, false or 'skip', found 1"),
    ("joins.0", {"name": "side", "path": "s", "key": "k", "columns": ["k"], "format": "xml"},
     "joins[0].format: 'xml' is not one of tsv, csv"),
    ("joins.0", {"name": "side", "path": "s", "key": "k", "columns": ["k"], "optional": "yes"},
     "joins[0].optional: expected true or false, found 'yes'"),
    ("joins.0", {"name": "side", "path": "s", "key": "q", "columns": ["q"]},
     f"joins[0].key: unknown column 'q' ({COLUMNS})"),
    ("joins", [{"name": "side", "path": "s", "key": "k", "columns": ["k"]}] * 2,
     "joins[1].name: join table 'side' is defined twice"),
    ("split.method", "time", "split.method: 'time' is not one of random, column, files"),
    ("split.fractions", [0.5, 0.5], "split.fractions: expected three non-negative numbers summing "
                                    "to 1, found [0.5, 0.5]"),
    ("split.fractions", [0.9, 0.2, -0.1], "split.fractions: expected three non-negative numbers "
                                          "summing to 1, found [0.9, 0.2, -0.1]"),
    ("split.fractions", ["0.8", "0.1", "0.1"], "split.fractions: expected three non-negative "
                                               "numbers summing to 1, found ['0.8', '0.1', '0.1']"),
    ("split.fractions", 0.8, "split.fractions: expected three non-negative numbers summing to 1, "
                             "found 0.8"),
    ("split", {"method": "column", "column": "k"}, "split.val_from: required by method 'column' "
     "(split.column names the column; rows >= split.val_from go to val, >= split.test_from to "
     "test)"),
    ("split", {"method": "column", "val_from": "1", "test_from": "2"}, "split.column: required "
     "by method 'column' (split.column names the column; rows >= split.val_from go to val, >= "
     "split.test_from to test)"),
    ("split", {"method": "column", "column": "t", "val_from": "1", "test_from": "2"},
     f"split.column: unknown column 't' ({COLUMNS})"),
    ("split.seed", -1, "split.seed: expected an integer >= 0, found -1"),
])
def test_invalid_specs(path, value, message):
    with pytest.raises(SpecError) as err:
        DatasetSpec.from_dict(with_change(path, value))
    assert str(err.value) == message


def test_join_field_and_quantile_bins_are_valid():
    spec = with_change("fields.0", {"name": "g2", "column": "g", "source": "side"})
    spec["fields"][1] = {"name": "b", "kind": "numeric", "discretiser": "quantile", "bins": 4}
    parsed = DatasetSpec.from_dict(spec)
    assert parsed.fields[0].source == "side" and parsed.fields[1].bins == 4


def test_without_joins_a_source_names_none():
    spec = with_change("fields.0", {"name": "g", "source": "side"})
    del spec["joins"]
    with pytest.raises(SpecError) as err:
        DatasetSpec.from_dict(spec)
    assert str(err.value) == ("fields[0].source: unknown join table 'side' (expected one of the "
                              "joins, but the spec has none)")


def test_base_is_valid_and_round_trips():
    spec = DatasetSpec.from_dict(BASE)
    assert spec.field_names == ["a", "b"]
    assert DatasetSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("name", preset_names())
def test_presets_round_trip(name):
    spec = load_preset(name)
    assert DatasetSpec.from_dict(spec.to_dict()) == spec


def test_preset_facts():
    assert load_preset("criteo").min_count == 10
    assert load_preset("avazu").min_count == 2
    assert load_preset("kdd12").label.rule == "positive"
    assert len(load_preset("criteo").fields) == 39


def test_load_yaml_errors(tmp_path):
    missing = tmp_path / "none.yaml"
    with pytest.raises(SpecError, match=f"^{missing}: cannot read the spec"):
        DatasetSpec.load(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("fields: [a\n")
    with pytest.raises(SpecError) as err:
        DatasetSpec.load(broken)
    assert str(err.value) == (f"{broken}:2: not valid YAML (expected ',' or ']', but got "
                              "'<stream end>', column 1)")
    control = tmp_path / "control.yaml"
    control.write_bytes(b"name: \x07\n")
    with pytest.raises(SpecError) as err:
        DatasetSpec.load(control)
    assert str(err.value) == (f"{control}: not valid YAML (special characters are not "
                              "allowed: #x0007 at character 6)")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: t\nlabel: {column: \xe9t\xe9}\n")
    with pytest.raises(SpecError) as err:
        DatasetSpec.load(latin)
    assert str(err.value) == (f"{latin}:2: not UTF-8 text (byte 0xE9 at offset 24); is this "
                              "the right file?")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpecError) as err:
        DatasetSpec.load(empty)
    assert str(err.value) == f"{empty}: spec: expected a mapping, found nothing"
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {format: csv, header: true}\nfields: []\n")
    with pytest.raises(SpecError) as err:
        DatasetSpec.load(bad)
    assert str(err.value) == f"{bad}: spec: 'fields' must list at least one field"


def test_yaml_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(BASE).encode())
    assert DatasetSpec.load(path) == DatasetSpec.from_dict(BASE)
