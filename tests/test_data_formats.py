"""Input formats (Parquet, libfm, CSV without header) and the numeric discretisers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from shaver.data.encode import RowEncoder
from shaver.data.prepare import prepare_dataset
from shaver.data.store import SPLITS
from shaver.data.tokens import criteo_token, criteo_tokens, log2_token, log2_tokens
from shaver.data.vocab import weighted_quantile_edges
from shaver.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "data"
ALL_TRAIN = {"method": "random", "fractions": [1.0, 0.0, 0.0]}


def decoded(ds, split="train"):
    """Per row, per field, the token text of each id."""
    vocab = ds.vocabularies
    local = np.asarray(ds.ids(split)) - ds.offsets
    return [[vocab[f][i] for f, i in zip(ds.field_names, row)] for row in local]


def test_parquet_matches_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"y": [1, 0, 1, 0], "a": ["x", None, "x", "z"], "n": [5, 1, None, -3]})
    pq.write_table(table, tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text("y,a,n\n1,x,5\n0,,1\n1,x,\n0,z,-3\n")
    fields = ["a", {"name": "n", "kind": "numeric", "discretiser": "criteo"}]
    spec_pq = {"input": {"format": "parquet"}, "label": {"column": "y"}, "fields": fields,
               "split": ALL_TRAIN}
    spec_csv = {"input": {"format": "csv", "header": True}, "label": {"column": "y"},
                "fields": fields, "split": ALL_TRAIN}
    a = prepare_dataset(spec_pq, tmp_path / "t.parquet", tmp_path / "p", quiet=True)
    b = prepare_dataset(spec_csv, tmp_path / "t.csv", tmp_path / "c", quiet=True)
    assert decoded(a) == decoded(b) == [["x", "L2"], ["", "1"], ["x", ""], ["z", "-3"]]
    assert a.vocabularies == b.vocabularies


def test_parquet_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"y": [1]}), tmp_path / "t.parquet")
    spec = {"input": {"format": "parquet"}, "label": {"column": "y"}, "fields": ["a"]}
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, tmp_path / "t.parquet", tmp_path / "o", quiet=True)
    assert str(err.value) == (f"{tmp_path / 't.parquet'}: fields[0].name: unknown column 'a' "
                              "(expected one of the input columns: y; set fields[0].column to "
                              "read another)")
    pq.write_table(pa.table({"y": [1], "a": ["x"]}), tmp_path / "ok.parquet")
    with pytest.raises(DataError) as err:  # a later file without the column
        prepare_dataset(spec, [tmp_path / "ok.parquet", tmp_path / "t.parquet"], tmp_path / "o",
                        quiet=True)
    assert str(err.value) == f"{tmp_path / 't.parquet'}: no column 'a' (columns: y)"
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        prepare_dataset(spec, tmp_path / "bad.parquet", tmp_path / "o", quiet=True)


def test_libfm(tmp_path):
    spec = {"input": {"format": "libfm", "columns": ["label", "f1", "f2", "f3"]},
            "label": {"column": "label"},
            "fields": [{"name": n, "derive": "libfm_index"} for n in ("f1", "f2", "f3")],
            "split": ALL_TRAIN}
    ds = prepare_dataset(spec, FIX / "libfm_small.txt", tmp_path / "l", quiet=True)
    lines = (FIX / "libfm_small.txt").read_text().splitlines()
    expect = [[tok.split(":")[0] for tok in line.split(" ")[1:]] for line in lines]
    assert decoded(ds) == expect
    assert np.array_equal(ds.labels("train"), [float(line[0]) for line in lines])


def test_csv_without_header_and_first_token(tmp_path):
    (tmp_path / "t.csv").write_text('1,"a b",x\n0,"c",y\n1,"a d",x\n')
    spec = {"input": {"format": "csv", "columns": ["y", "g", "k"]}, "label": {"column": "y"},
            "fields": [{"name": "g", "derive": "first_token"}, "k"], "split": ALL_TRAIN}
    ds = prepare_dataset(spec, tmp_path / "t.csv", tmp_path / "o", quiet=True)
    assert decoded(ds) == [["a", "x"], ["c", "y"], ["a", "x"]]


def test_threshold_label_and_numbers(tmp_path):
    (tmp_path / "t.tsv").write_text("4.5\t1\n3\t2\nx\t3\n")
    spec = {"input": {"columns": ["r", "a"]}, "label": {"column": "r", "rule": "threshold",
                                                        "threshold": 4}, "fields": ["a"]}
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, tmp_path / "t.tsv", tmp_path / "o", quiet=True)
    assert str(err.value) == f"{tmp_path / 't.tsv'}:3: column 'r': label 'x' is not a number"


def test_log2_and_quantile(tmp_path):
    values = [0.5, 1, 2, 3, 8, 100, 1000, 7, 7, 7, None]
    (tmp_path / "t.tsv").write_text("".join(
        f"{i % 2}\t{'' if v is None else v}\t{'' if v is None else v}\n"
        for i, v in enumerate(values)))
    spec = {"input": {"columns": ["y", "a", "b"]}, "label": {"column": "y"},
            "fields": [{"name": "a", "kind": "numeric", "discretiser": "log2"},
                       {"name": "b", "kind": "numeric", "discretiser": "quantile", "bins": 4}],
            "split": ALL_TRAIN}
    ds = prepare_dataset(spec, tmp_path / "t.tsv", tmp_path / "o", quiet=True)
    rows = decoded(ds)
    assert [r[0] for r in rows] == ["0", "L0", "L1", "L1", "L3", "L6", "L9", "L2", "L2", "L2", ""]
    edges = ds.meta["quantile_edges"]["b"]
    xs = np.array([v for v in values if v is not None], float)
    assert edges == weighted_quantile_edges(xs, np.ones(len(xs)), 4).tolist()
    assert ds.vocabularies["b"] == ["__OOV__", "", "Q0", "Q1", "Q2", "Q3"]
    for r, v in zip(rows, values):
        assert r[1] == ("" if v is None else f"Q{int(np.searchsorted(edges, v, side='right'))}")
    enc = RowEncoder.from_dataset(ds)
    assert np.array_equal(enc.encode([{"a": "" if v is None else str(v),
                                       "b": "" if v is None else str(v)} for v in values]),
                          np.asarray(ds.ids("train")))


def test_weighted_quantile_edges_equal_repeated_values():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, 40).astype(float)
    w = rng.integers(1, 5, 40)
    for bins in (2, 3, 7):
        expanded = np.repeat(x, w)
        ref = np.unique(np.quantile(expanded, np.arange(1, bins) / bins, method="inverted_cdf"))
        assert np.array_equal(weighted_quantile_edges(x, w, bins), ref)


@pytest.mark.parametrize("text", ["0", "1", "2", "3", "4", "5", "-1", "-2", "1382", "25",
                                  "7389", "7390", "2980957", "9223372036854775807"])
def test_criteo_vectorised_equals_scalar(text):
    v = int(text)
    assert criteo_tokens([text]) == [criteo_token(v)]
    assert criteo_token(v) == (f"L{int(math.log(v) ** 2)}" if v > 2 else text)


def test_log2_vectorised_equals_scalar():
    texts = ["0.25", "1", "1.99", "2", "1024", "-3.5", "1e300", "nan"]
    assert log2_tokens(texts) == [log2_token(None if t == "nan" else float(t)) for t in texts]


def test_every_split_present(tmp_path):
    ds = prepare_dataset("criteo", FIX / "criteo_small.txt", tmp_path / "o", quiet=True)
    assert sum(ds.num_rows(s) for s in SPLITS) == 40


@pytest.mark.parametrize("spec_field,text,message", [
    ({"name": "a", "kind": "numeric", "discretiser": "criteo"}, "99999999999999999999999",
     "field 'a': '99999999999999999999999' is out of the 64-bit range"),
    ({"name": "a", "kind": "numeric", "discretiser": "log2"}, "inf",
     "field 'a': 'inf' is not a finite number"),
    ({"name": "a", "kind": "numeric", "discretiser": "log2"}, "1,5",
     "field 'a': '1,5' is not a number"),
    ({"name": "a", "kind": "numeric", "discretiser": "quantile"}, "abc",
     "field 'a': 'abc' is not a number"),
    ({"name": "a", "derive": "weekday"}, "141021", "field 'a': '141021' is not a YYMMDDHH time "
                                                   "(format avazu)"),
    ({"name": "a", "derive": "hour_of_day"}, "14102125", "field 'a': '14102125' is not a YYMMDDHH "
                                                        "time (format avazu)"),
    ({"name": "a", "derive": "hour_of_day", "format": "iso"}, "14102100",
     "field 'a': '14102100' is not an ISO 8601 time (format iso)"),
])
def test_bad_values_name_line_and_field(tmp_path, spec_field, text, message):
    path = tmp_path / "t.tsv"
    path.write_text(f"1\t7\n0\t{text}\n")
    spec = {"input": {"columns": ["y", "a"]}, "label": {"column": "y"}, "fields": [spec_field]}
    if "derive" in spec_field:
        first = "2014-10-21" if spec_field.get("format") == "iso" else "14102100"
        path.write_text(f"1\t{first}\n0\t{text}\n")
    with pytest.raises(DataError) as err:
        prepare_dataset(spec, path, tmp_path / "o", quiet=True)
    assert str(err.value) == f"{path}:2: {message}"


def test_out_of_range_integer_is_named_past_missing_values():
    from shaver.data.numbers import BadValue, parsed

    with pytest.raises(BadValue) as err:
        parsed(["", "7", "99999999999999999999"], integer=True)
    assert err.value.index == 2 and "'99999999999999999999' is out of the 64-bit range" in str(
        err.value)
