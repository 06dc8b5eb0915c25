"""The torch-free runtime: import without torch, raw rows via the feature map, pruned dirs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from shaver.data.store import write_prepared
from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.errors import ArtifactError, DataError
from shaver.pruning.io import save_pruned
from shaver.table.size import predict_artifact_bytes
from test_deploy_support import FIELD_DIMS, offsets, pruned_model, random_ids, torch_proba

NAMES = [f"f{i}" for i in range(len(FIELD_DIMS))]
INFO = {"dataset": {"path": "", "fingerprint": "x"}, "model_fingerprint": "0" * 16,
        "budget": {"kind": "sparsity", "value": 0.5, "label": "sparsity=0.5"},
        "scorer": "shapley", "order": "abs", "codebook": "fixed", "placeholder": "codebook",
        "metrics": {"auc": 0.7, "logloss": 0.5}, "artifact_bytes": 123}


def make_dataset(path):
    vocab = {n: ["__oov__"] + [f"{n}_{j}" for j in range(1, d)] for n, d in zip(NAMES, FIELD_DIMS)}
    spec = {"name": "tiny", "input": {"format": "csv", "header": True, "columns": ["y", *NAMES]},
            "label": {"column": "y", "rule": "binary"}, "fields": [{"name": n} for n in NAMES]}
    ids = random_ids(batch=10)
    splits = {"train": (ids, np.zeros(10, np.float32), np.arange(10))}
    return write_prepared(path, field_names=NAMES, vocabularies=vocab, splits=splits,
                          frequencies=np.ones(sum(FIELD_DIMS), np.int64), spec=spec)


def test_runtime_imports_and_predicts_without_torch(tmp_path):
    model, _ = pruned_model("deepfm")
    path = export_artifact(model, tmp_path / "a.shaver").path
    x = random_ids(batch=5, seed=4)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, shaver.runtime as rt\n"
        f"art = rt.load_artifact({str(path)!r})\n"
        f"p = art.predict(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print(' '.join(repr(float(v)) for v in p))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = np.array([float(v) for v in out.stdout.split()])
    np.testing.assert_allclose(got, torch_proba(model, x), atol=1e-5)


def test_raw_rows_with_the_feature_map_of_a_pruned_dir(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    model, mask = pruned_model("fm")
    save_pruned(tmp_path / "pruned", model, {**INFO, "dataset": {
        "path": str(dataset.path), "fingerprint": dataset.fingerprint}})
    out = export_artifact(tmp_path / "pruned", tmp_path / "a.shaver")
    meta = {"feature_map": {"meta": {k: v for k, v in dataset.meta.items() if k != "checksums"},
                            "vocab": dataset.vocabularies}}
    assert out.bytes == predict_artifact_bytes(model, mask, metadata=meta)
    art = load_artifact(out.path)
    assert art.info["budget"]["label"] == "sparsity=0.5"
    rows = [{"f0": "f0_1", "f1": "f1_7", "f2": "f2_3", "f3": "f3_39"},
            {"f0": "unseen", "f1": "f1_2", "f2": None, "f3": "f3_1"}]  # unseen, missing -> OOV
    ids = np.array([[1, 7, 3, 39], [0, 2, 0, 1]]) + offsets()
    np.testing.assert_array_equal(art.encode_rows(rows), ids)
    np.testing.assert_allclose(art.predict_rows(rows), torch_proba(model, ids), atol=1e-5)
    assert art.raw_columns == ["f0", "f1", "f2", "f3"]
    misnamed = [{"a": "f0_1", "b": "f1_7"}]
    for call in (art.encode_rows, art.predict_rows):
        with pytest.raises(DataError) as err:
            call(misnamed)
        assert str(err.value) == ("row 0 has no column f0, f1, f2, f3 (expected columns: f0, "
                                  "f1, f2, f3); give a missing value as '' or None, or pass "
                                  "allow_missing=True")
    np.testing.assert_array_equal(art.encode_rows(misnamed, allow_missing=True), [offsets()])
    del rows[1]["f2"]
    np.testing.assert_array_equal(art.encode_rows(rows, allow_missing=True), ids)


def test_pruned_dir_without_its_dataset_still_exports(tmp_path):
    model, mask = pruned_model("lr")
    save_pruned(tmp_path / "pruned", model, {**INFO, "dataset": {
        "path": str(tmp_path / "gone"), "fingerprint": "x"}})
    out = export_artifact(tmp_path / "pruned", tmp_path / "a.shaver")
    assert load_artifact(out.path).feature_map is None
    assert out.bytes == predict_artifact_bytes(model, mask)


def test_bad_feature_maps_raise(tmp_path):
    model, _ = pruned_model("lr")
    for fmap, message in [({"vocab": {}}, "lacks 'meta'"),
                          ({"meta": {}, "vocab": {}}, "unusable feature map"),
                          ({"meta": {"spec": {"name": "t", "fields": [{"name": "f0"}],
                                              "input": {"format": "csv", "columns": ["y", "f0"]},
                                              "label": {"column": "y"}}},
                            "vocab": {"f0": ["a"]}}, "field sizes")]:
        out = export_artifact(model, tmp_path / "a.shaver", metadata={"feature_map": fmap})
        with pytest.raises(ArtifactError, match=message):
            load_artifact(out.path).encode_rows([{"f0": "a"}])


def test_breakdown_and_repr(tmp_path):
    model, _ = pruned_model("deepfm")
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    parts = art.breakdown()
    assert sum(parts.values()) == art.size
    assert all(v > 0 for k, v in parts.items() if k != "scales") and parts["scales"] == 0
    assert "deepfm" in repr(art)
    json.dumps(art.info)
