"""The real samples in ../shared/data (Criteo, Avazu, KDD12 heads); skipped when absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shaver.data.encode import RowEncoder
from shaver.data.prepare import prepare_dataset
from shaver.data.presets import load_preset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def sample(rel: str) -> Path:
    path = SHARED / rel
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_criteo_head(tmp_path):
    path = sample("criteo/train_head10000.txt")
    ds = prepare_dataset("criteo", path, tmp_path / "c", quiet=True)
    assert ds.num_rows("all") == 10_000
    _, y = ds.arrays("all")
    assert abs(y.mean() - 0.218) < 0.001  # README: 21.8% positive
    vocab = ds.vocabularies
    assert "" in vocab["I12"]  # missing in 77% of rows: a frequent token of its own
    assert "" in vocab["C26"]  # trailing tabs (empty C26) parsed as values, not errors
    assert "-1" in vocab["I2"]  # negative integers kept as themselves
    kept_cats = sum(len(vocab[f"C{i}"]) - 1 for i in range(1, 27))
    # README: 1,976 categorical values seen >= 10 times in all rows; ~80% of rows are train
    assert 1_200 < kept_cats < 1_976
    lines = path.read_text().splitlines()
    cols = load_preset("criteo").input.columns
    idx = np.load(ds.path / "test_rows.npy")
    rows = [dict(zip(cols, lines[i].split("\t"))) for i in idx]
    assert np.array_equal(RowEncoder.from_dataset(ds).encode(rows), np.asarray(ds.ids("test")))


def test_avazu_head(tmp_path):
    ds = prepare_dataset("avazu", sample("avazu/train_head9999.csv"), tmp_path / "a", quiet=True)
    assert ds.num_rows("all") == 9_999
    _, y = ds.arrays("all")
    assert abs(y.mean() - 0.171) < 0.001  # README: 17.1% positive
    assert ds.vocabularies["hour_of_day"] == ["__OOV__", "0"]  # all rows share one hour


def test_kdd12_examples(tmp_path):
    train = sample("kdd12/training_example.txt")
    profile = sample("kdd12/userid_profile_example.txt")
    spec = load_preset("kdd12").to_dict()
    spec["min_count"] = 1
    ds = prepare_dataset(spec, train, tmp_path / "k", quiet=True, joins={"profile": profile})
    assert ds.num_rows("all") == 3 and ds.field_names[-2:] == ["gender", "age"]
    _, y = ds.arrays("all")
    assert y.tolist() == [0.0, 0.0, 0.0]
