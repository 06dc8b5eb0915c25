"""A calibrated model through every stage: torch, pruned directory, artifact, runtime, ONNX."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.deploy.embedding import compressed_model
from shaver.errors import ArtifactError, CheckpointError, ModelError
from shaver.models.base import (
    calibration_of,
    clear_calibration,
    copy_without_embedding,
    set_calibration,
)
from shaver.models.registry import build_model
from shaver.pruning.io import INFO_FILE, load_pruned, save_pruned
from shaver.runtime.calibration import fit_logit_calibration, log_losses
from shaver.runtime.container import SectionSpec, read_container, write_container
from shaver.runtime.tiered import TierSpec
from shaver.table.size import plan_bytes, predict_artifact_bytes
from shaver.table.tiers import tiered_copy
from test_deploy_support import pruned_model, random_ids

CAL = (0.6180339887, -0.75)  # float32-rounded on the model
TIERS = [TierSpec("int2"), TierSpec("int4", "row"), TierSpec("fp16")]
INFO = {"dataset": {}, "model_fingerprint": "x", "budget": {"kind": "sparsity", "value": 0.5},
        "scorer": "shapley", "order": "abs", "codebook": "fixed", "placeholder": "codebook"}


def calibrated(name: str, tiered: bool = False, seed: int = 0):
    model, mask = pruned_model(name, seed=seed)
    set_calibration(model, *CAL)
    if tiered:
        tmap = np.where(mask, np.random.default_rng(seed).integers(1, 4, mask.shape), 0)
        model = tiered_copy(model, tmap.astype(np.uint8), TIERS, model.embedding.codebook)
        return model, tmap.astype(np.uint8)
    return model, mask


def logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


def test_forward_applies_it_and_models_without_it_are_unchanged():
    model, _ = pruned_model("deepfm")
    x = torch.as_tensor(random_ids(batch=32))
    with torch.no_grad():
        raw = model.head(model.embedding(x), x)
        torch.testing.assert_close(model(x), raw, rtol=0, atol=0)
        assert calibration_of(model) is None
        set_calibration(model, *CAL)
        scale, bias = calibration_of(model)
        assert (scale, bias) == (float(np.float32(CAL[0])), float(np.float32(CAL[1])))
        torch.testing.assert_close(model(x), raw * np.float32(scale) + np.float32(bias),
                                   rtol=0, atol=0)
        clear_calibration(model)
        assert calibration_of(model) is None
        torch.testing.assert_close(model(x), raw, rtol=0, atol=0)


def test_state_dict_is_unchanged_and_copies_keep_it():
    sizes = {"embed_dim": 4, "mlp_dims": [8], "cross_layers": 1, "rank": 2, "num_experts": 2}
    model = build_model("dcn-mix", [5, 7], **sizes).eval()
    keys = list(model.state_dict())
    set_calibration(model, *CAL)
    assert list(model.state_dict()) == keys
    rebuilt = build_model("dcn-mix", [5, 7], **sizes)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert calibration_of(rebuilt) is None
    for clone in (copy.deepcopy(model), copy.copy(model), copy_without_embedding(model)):
        assert calibration_of(clone) == calibration_of(model)
    assert calibration_of(model.to("cpu").float()) == calibration_of(model)


@pytest.mark.parametrize("scale, bias, match", [
    (float("nan"), 0.0, "two finite"), (1.0, float("inf"), "two finite"),
    (1e39, 0.0, "float32"), (True, 0.0, "two finite"), ("1.0", 0.0, "two finite"),
])
def test_set_calibration_refuses_non_numbers(scale, bias, match):
    model, _ = pruned_model("lr")
    with pytest.raises(ModelError, match=match):
        set_calibration(model, scale, bias)
    assert calibration_of(model) is None


def test_set_calibration_refuses_a_forward_that_ignores_it():
    with pytest.raises(ModelError, match="does not apply a calibration"):
        set_calibration(torch.nn.Linear(2, 1), 1.0, 0.0)


def test_a_fitted_calibration_lowers_the_models_log_loss():
    model, _ = pruned_model("deepfm")
    x = random_ids(batch=400, seed=5)
    z = logits(model, x)
    u = (z - z.mean()) / z.std()  # these test models' logits are far too confident
    y = (np.random.default_rng(0).random(400) < 1 / (1 + np.exp(-u))).astype(float)
    scale, bias = fit_logit_calibration(z, y)
    set_calibration(model, scale, bias)
    cal = logits(model, x)
    assert log_losses(cal, y).mean() < log_losses(z, y).mean()
    np.testing.assert_allclose(log_losses(cal, y), log_losses(z, y, scale, bias), atol=1e-5)


@pytest.mark.parametrize("tiered", [False, True])
def test_pruned_directory_round_trip(tmp_path, tiered):
    model, _ = calibrated("deepfm", tiered)
    save_pruned(tmp_path / "p", model, {**INFO, "calibration": {"scale": 9, "bias": 9}})
    info = json.loads((tmp_path / "p" / INFO_FILE).read_text())
    assert info["calibration"] == dict(zip(("scale", "bias"), calibration_of(model)))
    loaded = load_pruned(tmp_path / "p", device="cpu").model
    assert calibration_of(loaded) == calibration_of(model)
    x = random_ids(batch=32, seed=2)
    np.testing.assert_array_equal(logits(loaded, x), logits(model, x))
    art = load_artifact(export_artifact(tmp_path / "p", tmp_path / "a.shaver").path)
    assert tuple(map(float, art.calibration)) == calibration_of(model)
    clear_calibration(model)
    save_pruned(tmp_path / "q", model, {**INFO, "calibration": {"scale": 9, "bias": 9}})
    assert "calibration" not in json.loads((tmp_path / "q" / INFO_FILE).read_text())
    assert calibration_of(load_pruned(tmp_path / "q", device="cpu").model) is None


@pytest.mark.parametrize("bad", [{"scale": "x", "bias": 0}, {"scale": 1}, [1, 2], 3])
def test_pruned_directory_refuses_a_malformed_calibration(tmp_path, bad):
    model, _ = calibrated("lr")
    save_pruned(tmp_path / "p", model, INFO)
    path = tmp_path / "p" / INFO_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "calibration": bad}))
    with pytest.raises(CheckpointError, match="malformed calibration"):
        load_pruned(tmp_path / "p", device="cpu")


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "dcn-mix"])
@pytest.mark.parametrize("tiered", [False, True])
def test_export_size_runtime_and_compressed_model(tmp_path, name, tiered):
    model, mask = calibrated(name, tiered)
    meta = {"metrics": {"auc": 0.7}}
    out = export_artifact(model, tmp_path / "a.shaver", metadata=meta)
    size = (tmp_path / "a.shaver").stat().st_size
    assert out.bytes == size == predict_artifact_bytes(model, mask > 0, metadata=meta)
    if tiered:
        assert plan_bytes(model, mask, TIERS, metadata=meta)[0] == size
    art = load_artifact(out.path)
    assert art.version == 2
    assert art.calibration == tuple(np.float32(v) for v in calibration_of(model))
    x = random_ids(batch=64, seed=1)
    want = logits(model, x)
    np.testing.assert_allclose(art.logits(x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits(compressed_model(art), x), want, rtol=1e-5, atol=1e-5)
    assert calibration_of(compressed_model(art)) == calibration_of(model)


def test_size_does_not_depend_on_the_numbers_and_uncalibrated_stays_v1(tmp_path):
    model, mask = pruned_model("deepfm")
    plain = predict_artifact_bytes(model, mask)
    assert load_artifact(export_artifact(model, tmp_path / "a.shaver").path).version == 1
    sizes = set()
    for pair in [(1.0, 0.0), (0.123456789, -3.3e-7), (-12345.678, 1e30)]:
        set_calibration(model, *pair)
        sizes.add(predict_artifact_bytes(model, mask))
    assert len(sizes) == 1 and sizes.pop() > plain


@pytest.mark.parametrize("name, tiered, head", [("deepfm", False, "fp32"),
                                                ("deepfm", True, "int8"),
                                                ("dcn-mix", True, "fp32"),
                                                ("dcn-mix", False, "fp16")])
def test_onnx_applies_it(tmp_path, name, tiered, head):
    ort = pytest.importorskip("onnxruntime")
    from shaver.deploy.onnx_export import export_onnx

    model, _ = calibrated(name, tiered)
    out = export_artifact(model, tmp_path / "a.shaver", head_dtype=head)
    export_onnx(out.path, tmp_path / "a.onnx")
    x = random_ids(batch=64, seed=7)
    session = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    got, proba = session.run(["logit", "probability"], {"ids": x})
    art = load_artifact(out.path)
    np.testing.assert_allclose(got, art.logits(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(proba, art.predict(x), rtol=0, atol=1e-6)
    if head == "fp32":
        np.testing.assert_allclose(got, logits(model, x), rtol=1e-5, atol=1e-5)


def test_reader_refuses_a_section_the_header_does_not_announce(tmp_path):
    model, _ = calibrated("lr")
    out = export_artifact(model, tmp_path / "a.shaver")
    box = read_container(out.path)
    header = {k: v for k, v in box.header.items()
              if k not in ("calibration", "sections", "format", "format_version")}
    specs = [SectionSpec(e[0], e[1], e[2], tuple(e[3])) for e in box.table]
    write_container(tmp_path / "b.shaver", header,
                    [(s, box.arrays[s.name]) for s in specs], version=2)
    with pytest.raises(ArtifactError, match="malformed calibration: header None"):
        load_artifact(tmp_path / "b.shaver")


def test_inspect_shows_it(tmp_path, capsys):
    from shaver.cli import main

    model, _ = calibrated("deepfm")
    out = export_artifact(model, tmp_path / "a.shaver").path
    assert main(["inspect", str(out)]) == 0
    scale, bias = calibration_of(model)
    assert f"calibration: probability = sigmoid({scale:.6g} * logit {bias:+.6g})" \
        in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["calibration"] == {"scale": scale, "bias": bias}
    plain, _ = pruned_model("lr")
    assert main(["inspect", str(export_artifact(plain, tmp_path / "b.shaver").path),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"] is None
