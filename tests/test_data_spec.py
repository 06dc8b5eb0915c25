"""Dataset spec validation: every rule, with its exact message; presets round-trip."""

from __future__ import annotations

import copy

import pytest

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


@pytest.mark.parametrize("path,value,message", [
    ("colour", 1, "spec: unknown key 'colour' (expected one of name, input, label, fields, "
                  "min_count, joins, split)"),
    ("input", [1], "input: expected a mapping, found list"),
    ("input.format", "xlsx", "input.format: 'xlsx' is not one of tsv, csv, parquet, libfm"),
    ("input.header", "yes", "input.header: expected true, false or 'skip', found 'yes'"),
    ("input.columns", [], "input.columns: required when the file has no header line"),
    ("input.columns", ["y", "a", "a", "k"], "input.columns: column names must be unique"),
    ("label.rule", "ctr", "label.rule: 'ctr' is not one of binary, positive, threshold"),
    ("fields", [], "spec: 'fields' must list at least one field"),
    ("fields.0", {"column": "a"}, "fields[0]: missing 'name'"),
    ("fields.0", {"name": "a", "kind": "text"}, "fields[0].kind: 'text' is not one of "
                                                "categorical, numeric"),
    ("fields.0", {"name": "a", "kind": "numeric"}, "fields[0].discretiser: None is not one of "
                                                   "criteo, log2, quantile"),
    ("fields.0", {"name": "a", "discretiser": "log2"}, "fields[0]: a discretiser needs kind: "
                                                       "numeric"),
    ("fields.0", {"name": "a", "derive": "month"}, "fields[0].derive: 'month' is not one of "
                                                   "hour_of_day, weekday, first_token, libfm_index"),
    ("fields.0", {"name": "a", "bins": 1}, "fields[0].bins: expected an integer >= 2, found 1"),
    ("fields.0", {"name": "a", "min_count": 0}, "fields[0].min_count: expected an integer >= 1, "
                                                "found 0"),
    ("fields.0", {"name": "b"}, "fields: field 'b' is defined twice"),
    ("fields.0", {"name": "z"}, "field 'z': unknown column 'z' (input columns: y, a, b, k)"),
    ("fields.0", {"name": "g", "source": "other"}, "field 'g': unknown join table 'other'"),
    ("fields.0", {"name": "g", "source": "side"}, "field 'g': join table 'side' has no column 'g'"
     if False else None),
    ("min_count", 1.5, "spec.min_count: expected an integer >= 1, found 1.5"),
    ("min_count", True, "spec.min_count: expected an integer >= 1, found True"),
    ("joins.0", {"name": "side", "path": "s"}, "joins[0]: missing 'key'"),
    ("joins.0", {"name": "side", "path": "s", "key": "k", "columns": ["k"], "header": 1},
     "joins[0].header: expected true, false or 'skip', found 1"),
    ("joins.0", {"name": "side", "path": "s", "key": "k", "columns": ["k"], "format": "xml"},
     "joins[0].format: 'xml' is not one of tsv, csv"),
    ("joins.0", {"name": "side", "path": "s", "key": "q", "columns": ["q"]},
     "join 'side': unknown key column 'q'"),
    ("label.column", "click", "label: unknown column 'click'"),
    ("split.fractions", [0.5, 0.5], "split.fractions: expected three non-negative numbers summing "
                                    "to 1, found [0.5, 0.5]"),
    ("split.fractions", [0.9, 0.2, -0.1], "split.fractions: expected three non-negative numbers "
                                          "summing to 1, found [0.9, 0.2, -0.1]"),
    ("split", {"method": "column", "column": "k"}, "split: method 'column' needs 'column', "
                                                   "'val_from' and 'test_from'"),
    ("split", {"method": "column", "column": "t", "val_from": "1", "test_from": "2"},
     "split: unknown column 't'"),
    ("split.seed", -1, "split.seed: expected an integer >= 0, found -1"),
])
def test_invalid_specs(path, value, message):
    spec = with_change(path, value)
    if message is None:  # a join column that exists is valid
        spec["fields"][0] = {"name": "g2", "column": "g", "source": "side"}
        assert DatasetSpec.from_dict(spec).fields[0].source == "side"
        spec["fields"][0] = {"name": "g2", "column": "zz", "source": "side"}
        message = "field 'g2': join table 'side' has no column 'zz'"
    with pytest.raises(SpecError) as err:
        DatasetSpec.from_dict(spec)
    assert str(err.value) == message


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
    with pytest.raises(SpecError, match=f"^{broken}: not valid YAML"):
        DatasetSpec.load(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {format: csv, header: true}\nfields: []\n")
    with pytest.raises(SpecError) as err:
        DatasetSpec.load(bad)
    assert str(err.value) == f"{bad}: spec: 'fields' must list at least one field"
