"""Quantised heads (fp16, int8 per output channel): exact sizes, runtime = fake-quantised torch,
ONNX, versioning, and the bad files a reader must refuse."""

from __future__ import annotations

import struct

import numpy as np
import onnxruntime as ort
import pytest
import torch

from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.deploy.onnx_export import export_onnx
from shaver.errors import ArtifactError
from shaver.runtime import container
from shaver.runtime.headq import dequantize_head, first_order_dtype, quantize_int8, scale_shape
from shaver.runtime.tiered import TierSpec
from shaver.table.head import fake_quantize_head
from shaver.table.size import plan_bytes, predict_artifact_bytes
from test_deploy_support import pruned_model, random_ids

MODELS = ["lr", "fm", "deepfm", "dcn-v2", "dcn-mix"]
HEADS = ["fp32", "fp16", "int8"]


def _logits(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("values", ["fp32", "fp16", "int8"])
def test_predicted_size_is_file_size(tmp_path, name, head, values):
    for seed, keep in enumerate([[0.9, 0.3, 0.02, 0.6], [0, 0, 0, 0]]):
        model, mask = pruned_model(name, keep=keep, seed=seed)
        predicted = predict_artifact_bytes(model, mask, value_dtype=values, head_dtype=head)
        out = export_artifact(model, tmp_path / "a.shaver", value_dtype=values, head_dtype=head)
        assert out.bytes == predicted == (tmp_path / "a.shaver").stat().st_size
        assert sum(out.breakdown.values()) == predicted
    if values == "fp32":  # the plan oracle of a one-tier fp32 plan is the v1 file's size
        empty = np.zeros(mask.shape, np.uint8)
        assert plan_bytes(model, empty, [TierSpec("fp32")], head_dtype=head)[0] == \
            predict_artifact_bytes(model, np.zeros_like(mask), head_dtype=head)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("head", HEADS)
def test_runtime_equals_fake_quantized_torch(tmp_path, name, head):
    model, _ = pruned_model(name)
    export_artifact(model, tmp_path / "a.shaver", head_dtype=head)
    art = load_artifact(tmp_path / "a.shaver")
    assert art.head_dtype == head
    x = random_ids(batch=64)
    reference = _logits(fake_quantize_head(model, head), x)
    np.testing.assert_allclose(art.logits(x), reference, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(art.predict(x), 1 / (1 + np.exp(-reference)), rtol=0, atol=1e-5)
    if head != "fp32" and name not in ("lr",):
        # the quantisation is real: the fp32 model differs from the stored one
        assert np.abs(_logits(model, x) - reference).max() > 1e-6


def test_int8_head_and_values_together(tmp_path):
    model, _ = pruned_model("deepfm")
    export_artifact(model, tmp_path / "a.shaver", value_dtype="int8", head_dtype="int8")
    art = load_artifact(tmp_path / "a.shaver")
    # first-order weights: int8 with per-field scales; head matrices int8 with scales
    table = art.container.arrays["first_order/linear.weight.weight"]
    assert table.dtype == np.int8
    assert art.container.arrays["head/mlp.0.weight"].dtype == np.int8
    assert art.container.arrays["head_scale/mlp.0.weight"].shape == (32, 1)
    assert art.container.arrays["head/mlp.0.bias"].dtype == np.float32


def test_first_order_takes_the_more_compact_dtype():
    assert first_order_dtype("fp32", "int8") == "int8"
    assert first_order_dtype("int8", "fp32") == "int8"
    assert first_order_dtype("fp16", "fp32") == "fp16"
    assert first_order_dtype("fp32", "fp16") == "fp16"


def test_int8_quantisation_is_per_output_channel():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 10)).astype(np.float32) * np.arange(1, 7)[:, None]
    w[3] = 0.0
    q, s = quantize_int8("mlp.0.weight", w)
    assert s.shape == (6, 1) and q.dtype == np.int8
    assert np.abs(q).max(axis=1).tolist() == [127, 127, 127, 0, 127, 127]
    assert np.all(np.abs(q * s - w) <= s / 2 + 1e-7)
    u = rng.normal(size=(2, 8, 3)).astype(np.float32)  # DCN-Mix u: reduces its last axis
    assert scale_shape("cross.u.0", u.shape) == (2, 8, 1)
    assert scale_shape("cross.v.0", u.shape) == (2, 1, 3)


def test_fp32_head_stays_version_1_and_quantised_heads_are_version_2(tmp_path, monkeypatch):
    model, _ = pruned_model("deepfm")
    for head, version in (("fp32", 1), ("fp16", 2), ("int8", 2)):
        path = export_artifact(model, tmp_path / f"{head}.shaver", head_dtype=head).path
        assert struct.unpack_from("<I", path.read_bytes(), 8)[0] == version
    # a reader that knows only version 1 refuses the quantised head by its version
    monkeypatch.setattr(container, "READABLE_VERSIONS", (1,))
    load_artifact(tmp_path / "fp32.shaver")
    with pytest.raises(ArtifactError, match="format version 2 is not supported"):
        load_artifact(tmp_path / "int8.shaver")


@pytest.mark.parametrize("name", ["deepfm", "dcn-mix"])
def test_onnx_keeps_the_head_quantised(tmp_path, name):
    model, _ = pruned_model(name)
    sizes = {}
    for head in ("fp32", "int8"):
        art_path = export_artifact(model, tmp_path / f"{head}.shaver", head_dtype=head).path
        path = export_onnx(art_path, tmp_path / f"{head}.onnx")
        sizes[head] = path.stat().st_size
        x = random_ids(batch=32, seed=3)
        got = ort.InferenceSession(str(path)).run(["logit"], {"ids": x})[0]
        np.testing.assert_allclose(got, load_artifact(art_path).logits(x), atol=1e-4)
    assert sizes["int8"] < sizes["fp32"]


def test_bad_head_sections_are_refused():
    q = np.zeros((4, 3), np.int8)
    with pytest.raises(ArtifactError, match="head tensor w and its scales"):
        dequantize_head({"w": q}, {"w": np.ones((1, 3), np.float32)}, "int8", "f")
    with pytest.raises(ArtifactError, match="head scales without their tensor: v"):
        dequantize_head({"w": q}, {"v": np.ones((4, 1), np.float32)}, "int8", "f")
    with pytest.raises(ArtifactError, match="head scales in a fp16 head"):
        dequantize_head({"w": q}, {"w": np.ones((4, 1), np.float32)}, "fp16", "f")


def test_unknown_head_dtype_is_refused(tmp_path):
    model, mask = pruned_model("fm")
    with pytest.raises(ArtifactError, match="head dtype must be one of fp32, fp16, int8"):
        predict_artifact_bytes(model, mask, head_dtype="int4")
    with pytest.raises(ArtifactError, match="cannot write format version 7"):
        container.container_bytes({}, [], version=7)


def test_cli_export_and_inspect_a_quantised_head(tmp_path, capsys):
    from shaver.cli import main
    from shaver.pruning.io import save_pruned
    from test_runtime import INFO, make_dataset

    model, _ = pruned_model("deepfm")
    dataset = make_dataset(tmp_path / "data")
    info = {**INFO, "dataset": {"path": str(dataset.path), "fingerprint": dataset.fingerprint}}
    pruned = save_pruned(tmp_path / "pruned", model, info)
    out = tmp_path / "m.shaver"
    assert main(["export", "--pruned", str(pruned), "--dtype", "int8", "--head", "int8",
                 "--out", str(out)]) == 0
    assert load_artifact(out).head_dtype == "int8"
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "shaver artifact v2" in text and "values int8, head int8" in text
    assert main(["export", "--pruned", str(pruned), "--head", "fp16", "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file()
