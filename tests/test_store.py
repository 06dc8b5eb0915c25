"""The prepared-dataset contract: writing, reading, batching, verification, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shaver.data.store import (
    open_dataset,
    resolve_splits,
    write_prepared,
)
from shaver.errors import DataError


def _make(tmp_path, name="ds"):
    rng = np.random.default_rng(0)
    dims = [3, 4, 2]
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
    local = np.stack([rng.integers(0, d, 50) for d in dims], axis=1)
    ids = local + offsets
    labels = rng.integers(0, 2, 50).astype(np.float32)
    rows = np.arange(50)
    vocab = {f: ["<OOV>"] + [f"{f}{i}" for i in range(1, d)] for f, d in zip("abc", dims)}
    splits = {
        "train": (ids[:40], labels[:40], rows[:40]),
        "val": (ids[40:45], labels[40:45], rows[40:45]),
        "test": (ids[45:], labels[45:], rows[45:]),
    }
    freq = np.bincount(ids[:40].ravel(), minlength=sum(dims))
    ds = write_prepared(tmp_path / name, field_names=list("abc"), vocabularies=vocab,
                        splits=splits, frequencies=freq, spec={"name": "toy"})
    return ds, ids, labels


def test_round_trip_arrays_and_feature_map(tmp_path):
    ds, ids, labels = _make(tmp_path)
    assert ds.field_dims == [3, 4, 2]
    assert ds.num_features == 9
    assert ds.offsets.tolist() == [0, 3, 7]
    assert ds.row_field.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    x, y = ds.arrays("train+val")
    np.testing.assert_array_equal(x, ids[:45])
    np.testing.assert_array_equal(y, labels[:45])
    assert ds.frequencies.sum() == 40 * 3
    assert ds.num_rows("all") == 50
    ds.verify()


def test_batches_cover_every_row_once_and_shuffle_is_seeded(tmp_path):
    ds, ids, _ = _make(tmp_path)
    plain = np.concatenate([b.x for b in ds.batches("all", 7)])
    np.testing.assert_array_equal(plain, ids)
    a = [b.x for b in ds.batches("train+test", 8, shuffle=True, seed=3, epoch=1)]
    b = [b.x for b in ds.batches("train+test", 8, shuffle=True, seed=3, epoch=1)]
    c = [b.x for b in ds.batches("train+test", 8, shuffle=True, seed=3, epoch=2)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    got = np.concatenate(a)
    want = np.concatenate([ids[:40], ids[45:]])
    assert sorted(map(tuple, got)) == sorted(map(tuple, want))
    assert sum(len(b.y) for b in ds.batches("train", 16, drop_last=True)) == 32
    assert sum(len(b.y) for b in ds.batches("train", 16, limit=20)) == 20


def test_same_input_gives_byte_identical_files(tmp_path):
    a, _, _ = _make(tmp_path, "a")
    b, _, _ = _make(tmp_path, "b")
    assert a.meta["checksums"] == b.meta["checksums"]
    assert a.fingerprint == b.fingerprint


def test_bad_input_errors(tmp_path):
    ds, _, _ = _make(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="meta.json is missing"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="already exists"):
        _make(tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        resolve_splits("train+bogus")
    with pytest.raises(DataError, match="batch_size must be positive"):
        next(ds.batches("train", 0))
    meta = json.loads((ds.path / "meta.json").read_text())
    meta["format_version"] = 99
    (ds.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format_version 99"):
        open_dataset(ds.path)
    meta["format_version"] = 1
    (ds.path / "meta.json").write_text(json.dumps(meta))
    (ds.path / "train_ids.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="checksum mismatch"):
        open_dataset(ds.path).verify()
    with pytest.raises(DataError, match="corrupt"):
        open_dataset(ds.path).ids("train")
    (ds.path / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt JSON"):
        open_dataset(ds.path)


def test_no_partial_output_left_on_failure(tmp_path):
    with pytest.raises(KeyError):
        write_prepared(tmp_path / "x", field_names=["a"], vocabularies={},
                       splits={}, frequencies=np.zeros(1))
    assert list(tmp_path.iterdir()) == []


def test_importing_shaver_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; import shaver, shaver.data.store; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
