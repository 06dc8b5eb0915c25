"""``shaver export`` / ``inspect`` / ``predict`` end to end, and the ONNX export."""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import pytest
import torch

from shaver.deploy import cli
from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.deploy.embedding import CompressedEmbedding, compressed_model
from shaver.deploy.onnx_export import check_onnx, export_onnx
from shaver.errors import ArtifactError, DataError, ShaverError
from shaver.pruning.io import save_pruned
from test_deploy_support import FIELD_DIMS, pruned_model, random_ids, torch_proba
from test_runtime import INFO, NAMES, make_dataset


def run(argv):
    parser = argparse.ArgumentParser(prog="shaver")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    dataset = make_dataset(root / "data")
    model, _ = pruned_model("deepfm")
    info = {**INFO, "dataset": {"path": str(dataset.path), "fingerprint": dataset.fingerprint}}
    return save_pruned(root / "pruned", model, info), model


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "dcn-v2", "dcn-mix"])
def test_compressed_model_equals_the_pruned_model(tmp_path, name):
    model, _ = pruned_model(name)
    path = export_artifact(model, tmp_path / "a.shaver").path
    compressed = compressed_model(path)
    assert isinstance(compressed.embedding, CompressedEmbedding)
    x = random_ids(batch=32, seed=7)
    np.testing.assert_array_equal(torch_proba(compressed, x), torch_proba(model, x))
    with torch.no_grad():
        torch.testing.assert_close(compressed.embedding.weight,
                                   model.embedding.effective_weight(), rtol=0, atol=0)


@pytest.mark.parametrize("name,value_dtype", [("deepfm", "fp32"), ("dcn-mix", "int8"),
                                              ("fm", "fp16")])
def test_onnx_matches_torch(tmp_path, name, value_dtype):
    model, _ = pruned_model(name)
    art = export_artifact(model, tmp_path / "a.shaver", value_dtype=value_dtype).path
    path = export_onnx(art, tmp_path / "a.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = random_ids(batch=64, seed=9)
    logit, prob = session.run(None, {"ids": x})
    reference = load_artifact(art).predict(x)
    np.testing.assert_allclose(prob, reference, atol=1e-5)
    if value_dtype == "fp32":
        np.testing.assert_allclose(prob, torch_proba(model, x), atol=1e-5)
    ops = {node.op_type for node in __import__("onnx").load(str(path)).graph.node}
    assert {"BitwiseAnd", "CumSum", "Gather", "Where"} <= ops


def test_onnx_check_detects_a_different_model(tmp_path):
    model, _ = pruned_model("fm")
    art_path = export_artifact(model, tmp_path / "a.shaver").path
    path = export_onnx(art_path, tmp_path / "a.onnx")
    other = compressed_model(art_path)
    with torch.no_grad():
        other.linear.bias.add_(1.0)
    wrapped = torch.nn.Sequential()
    wrapped.forward = lambda x: (other(x), None)
    with pytest.raises(ArtifactError, match="differ"):
        check_onnx(path, wrapped, load_artifact(art_path))
    with pytest.raises(ArtifactError, match="does not exist"):
        export_onnx(art_path, tmp_path / "no" / "a.onnx")


def test_cli_export_inspect_predict(pruned_dir, tmp_path, capsys):
    directory, model = pruned_dir
    out = tmp_path / "m.shaver"
    assert run(["export", "--pruned", directory, "--out", out]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "pruned.json counted 123 bytes" in text
    assert run(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert "feature map of" in text
    for word in ("values", "index", "codebook", "first-order", "head", "metadata", "total",
                 "sparsity=0.5"):
        assert word in text
    assert f"{out.stat().st_size:,}" in text
    assert run(["inspect", out, "--json"]) == 0
    assert '"breakdown"' in capsys.readouterr().out

    rows = tmp_path / "rows.csv"
    rows.write_text("f0,f1,f2,f3\nf0_1,f1_7,f2_3,f3_39\nnew,f1_2,,f3_1\n")
    scores = tmp_path / "scores.csv"
    assert run(["predict", "--artifact", out, "--input", rows, "--output", scores]) == 0
    got = np.loadtxt(scores, skiprows=1)
    ids = np.array([[1, 7, 3, 39], [0, 2, 0, 1]]) + np.cumsum([0, *FIELD_DIMS[:-1]])
    np.testing.assert_allclose(got, torch_proba(model, ids), atol=1e-6)

    id_rows = tmp_path / "ids.csv"
    id_rows.write_text(",".join(NAMES) + "\n" + "\n".join(",".join(map(str, r)) for r in ids))
    capsys.readouterr()
    assert run(["predict", "--artifact", out, "--input", id_rows, "--ids"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == "probability"
    np.testing.assert_allclose(np.array(printed[1:], float), got, atol=1e-6)


def test_cli_export_onnx_and_dtypes(pruned_dir, tmp_path, capsys):
    directory, _ = pruned_dir
    assert run(["export", "--pruned", directory, "--format", "onnx", "--dtype", "int8",
                "--out", tmp_path / "m.onnx"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert run(["export", "--pruned", directory, "--dtype", "fp16", "--no-feature-map",
                "--out", tmp_path / "m.shaver"]) == 0
    assert load_artifact(tmp_path / "m.shaver").feature_map is None
    assert run(["export", "--artifact", tmp_path / "m.shaver", "--format", "onnx"]) == 0
    assert (tmp_path / "model.onnx").is_file()
    with pytest.raises(ArtifactError, match="pass --pruned"):
        run(["export", "--artifact", tmp_path / "m.shaver"])


def test_cli_predict_bad_input(pruned_dir, tmp_path):
    directory, _ = pruned_dir
    out = tmp_path / "m.shaver"
    run(["export", "--pruned", directory, "--out", out])
    cases = {
        "empty file": ("", []),
        "line 2: 1 cells": ("f0,f1\nx\n", []),
        "cannot read": (None, []),
        "line 2: ids must be integers": ("a,b,c,d\n1,x,3,4\n", ["--ids"]),
        "line 1: 2 ids": ("1,2\n", ["--ids"]),
    }
    for message, (content, extra) in cases.items():
        path = tmp_path / "in.csv"
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_text(content)
        with pytest.raises(DataError, match=message):
            run(["predict", "--artifact", out, "--input", path, *extra])
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not a UTF-8 CSV"):
        run(["predict", "--artifact", out, "--input", path])
    path.write_text("f0\nf0_1\n")
    with pytest.raises(ShaverError, match="cannot write"):
        run(["predict", "--artifact", out, "--input", path, "--output", tmp_path / "no" / "s.csv"])


def test_cli_predict_batches_and_empty_input(pruned_dir, tmp_path, monkeypatch, capsys):
    directory, model = pruned_dir
    out = tmp_path / "m.shaver"
    run(["export", "--pruned", directory, "--out", out])
    monkeypatch.setattr(cli, "PREDICT_BATCH", 3)
    ids = random_ids(batch=8, seed=11)
    path = tmp_path / "ids.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in ids) + "\n")
    capsys.readouterr()
    assert run(["predict", "--artifact", out, "--input", path, "--ids"]) == 0
    printed = np.array(capsys.readouterr().out.split()[1:], float)
    np.testing.assert_allclose(printed, torch_proba(model, ids), atol=1e-6)
    path.write_text("f0,f1\n")
    assert run(["predict", "--artifact", out, "--input", path]) == 0
    assert capsys.readouterr().out == "probability\n"
