"""RowEncoder: raw rows encode exactly as preparation did; unseen -> OOV; torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shaver.data.encode import RowEncoder
from shaver.data.prepare import prepare_dataset
from shaver.data.presets import load_preset
from shaver.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "data"


def raw_rows(path: Path, columns, sep="\t", header=False):
    lines = path.read_text().splitlines()[1 if header else 0:]
    return [dict(zip(columns, line.split(sep))) for line in lines]


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    spec = load_preset("criteo").to_dict()
    spec["min_count"] = 3
    return prepare_dataset(spec, FIX / "criteo_small.txt",
                           tmp_path_factory.mktemp("c") / "ds", quiet=True)


@pytest.mark.parametrize("how", ["path", "dataset", "meta"])
def test_round_trip_equals_prepared_ids(criteo, how):
    enc = {"path": lambda: RowEncoder.from_dataset(criteo.path),
           "dataset": lambda: RowEncoder.from_dataset(criteo),
           "meta": lambda: RowEncoder.from_meta(json.loads(json.dumps(criteo.meta)),
                                                criteo.vocabularies)}[how]()
    rows = raw_rows(FIX / "criteo_small.txt", load_preset("criteo").input.columns)
    for split in ("train", "val", "test"):
        idx = np.load(criteo.path / f"{split}_rows.npy")
        got = enc.encode([rows[i] for i in idx])
        assert got.dtype == np.int64 and got.shape == (len(idx), 39)
        assert np.array_equal(got, np.asarray(criteo.ids(split)))


def test_unseen_and_absent_values_are_oov(criteo):
    enc = RowEncoder.from_dataset(criteo)
    x = enc.encode([{"I1": "999999999", "C1": "never-seen"}, {}], allow_missing=True)
    i1, c1 = criteo.field_names.index("I1"), criteo.field_names.index("C1")
    assert x[0, c1] == criteo.offsets[c1]  # unseen category -> OOV
    vocab = criteo.vocabularies
    # absent key = missing token: its id if missing was kept, else OOV
    expect_missing = vocab["I1"].index("") if "" in vocab["I1"][1:] else 0
    assert x[1, i1] == criteo.offsets[i1] + expect_missing
    assert x[0, i1] == criteo.offsets[i1] + (vocab["I1"].index("L429") if "L429" in vocab["I1"]
                                             else 0)


def test_rows_must_carry_every_column(tmp_path):
    (tmp_path / "t.csv").write_text("y,user,age\n1,u1,30\n0,u2,\n")
    spec = {"input": {"format": "csv", "header": True}, "label": {"column": "y"},
            "fields": [{"name": "who", "column": "user"},
                       {"name": "age", "kind": "numeric", "discretiser": "log2"}],
            "split": {"fractions": [1.0, 0.0, 0.0]}}
    enc = RowEncoder.from_dataset(prepare_dataset(spec, tmp_path / "t.csv", tmp_path / "d",
                                                  quiet=True))
    assert enc.columns == ["user", "age"]
    assert enc.missing_columns(["age", "y"]) == ["user"]
    with pytest.raises(DataError) as err:
        enc.encode([{"user": "u1", "age": "30"}, {"who": "u1", "age": "30"}])
    assert str(err.value) == ("row 1 has no column user (expected columns: user, age); give a "
                              "missing value as '' or None, or pass allow_missing=True")
    given = enc.encode([{"user": "u2", "age": ""}, {"user": "u2", "age": None}])
    assert np.array_equal(given, enc.encode([{"user": "u2"}] * 2, allow_missing=True))


def test_bad_number_names_row_and_field(criteo):
    enc = RowEncoder.from_dataset(criteo)
    with pytest.raises(DataError) as err:
        enc.encode([{"I1": "1"}, {"I1": "one"}], allow_missing=True)
    assert str(err.value) == "row 1: field 'I1': 'one' is not an integer"


def test_derived_fields_avazu(tmp_path):
    ds = prepare_dataset("avazu", FIX / "avazu_small.csv", tmp_path / "a", quiet=True)
    rows = raw_rows(FIX / "avazu_small.csv", load_preset("avazu").input.columns, sep=",",
                    header=True)
    idx = np.load(ds.path / "train_rows.npy")
    assert np.array_equal(RowEncoder.from_dataset(ds).encode([rows[i] for i in idx]),
                          np.asarray(ds.ids("train")))


def test_meta_without_spec_and_missing_vocab(criteo):
    with pytest.raises(DataError, match="^meta has no dataset spec"):
        RowEncoder.from_meta({}, criteo.vocabularies)
    vocab = dict(criteo.vocabularies)
    del vocab["C3"]
    with pytest.raises(DataError, match="^vocabulary of field 'C3' is missing$"):
        RowEncoder.from_meta(criteo.meta, vocab)
    with pytest.raises(DataError, match="cannot read meta.json/vocab.json"):
        RowEncoder.from_dataset(criteo.path / "nowhere")


def test_data_package_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import shaver.data.encode, shaver.data.prepare, shaver.data.synthetic, "
            "shaver.data.builtin, shaver.data.store, shaver.data.cli\n"
            "assert sys.modules['torch'] is None\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_row_encoder_needs_neither_torch_nor_pyarrow(criteo):
    code = ("import sys, json; sys.modules['torch'] = None; sys.modules['pyarrow'] = None\n"
            "from shaver.data.encode import RowEncoder\n"
            f"enc = RowEncoder.from_dataset({str(criteo.path)!r})\n"
            "print(json.dumps(enc.encode([{'I1': '5', 'C1': '68fd1e64'}, {}], allow_missing=True).tolist()))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    expected = RowEncoder.from_dataset(criteo).encode([{"I1": "5", "C1": "68fd1e64"}, {}],
                                                      allow_missing=True)
    assert json.loads(out.stdout) == expected.tolist()
