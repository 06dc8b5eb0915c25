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
    path = tmp_path / "in.csv"
    cases = [
        ("", [], f"{path}: empty file (expected a header with the raw column names)"),
        ("f0,f1,f2,f3\nx,y,z,w\nx\n", [], f"{path}:3: 1 values, the header has 4"),
        ("f0,f1,f2,f3\nx,y,z,w,v\n", [], f"{path}:2: 5 values, the header has 4"),
        ('f0,f1,f2,f3\n"x\ny",a,b,c\nx,y\n', [], f"{path}:4: 2 values, the header has 4"),
        ("f0,f1\nx\n", ["--allow-missing"], f"{path}:2: 1 values, the header has 2"),
        ("f0,f1,f0\nx,y,z\n", [], f"{path}:1: column 'f0' appears twice in the header"),
        (None, [], f"{path}: cannot read the input (No such file or directory)"),
        ("a,b,c,d\n1,x,3,4\n", ["--ids"], f"{path}:2: ids must be integers, got ['1', 'x', "
                                           "'3', '4']"),
        ("1,2\n", ["--ids"], f"{path}:1: 2 ids, expected 4"),
    ]
    for content, extra, message in cases:
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_text(content)
        with pytest.raises(DataError) as err:
            run(["predict", "--artifact", out, "--input", path, *extra])
        assert str(err.value) == message
    path.write_text("f0\nf0_1\n")
    with pytest.raises(ShaverError, match="the directory .*/no does not exist"):
        run(["predict", "--artifact", out, "--input", path, "--allow-missing", "--output",
             tmp_path / "no" / "s.csv"])


@pytest.mark.parametrize("header,missing", [
    ("a,b", "f0, f1, f2, f3"),  # nothing matches: every field would be missing
    ("f0,f1,F2,f3", "f2"),  # one misnamed column
    ("f0,f1,f3", "f2"),  # one left out
])
def test_cli_predict_refuses_a_header_without_the_models_columns(pruned_dir, tmp_path, capsys,
                                                                header, missing):
    directory, model = pruned_dir
    out = tmp_path / "m.shaver"
    run(["export", "--pruned", directory, "--out", out])
    path = tmp_path / "in.csv"
    width = header.count(",") + 1
    path.write_text(header + "\n" + ",".join(["f0_1", "f1_7", "f2_3", "f3_39"][:width]) + "\n")
    with pytest.raises(DataError) as err:
        run(["predict", "--artifact", out, "--input", path])
    assert str(err.value) == (f"{path}:1: the header has no column {missing} (expected columns: "
                              f"f0, f1, f2, f3; the header has: {header.replace(',', ', ')}); "
                              "--allow-missing reads them as missing values")
    capsys.readouterr()
    assert run(["predict", "--artifact", out, "--input", path, "--allow-missing"]) == 0
    (score,) = np.array(capsys.readouterr().out.split()[1:], float)
    rows = [dict(zip(header.split(","), ["f0_1", "f1_7", "f2_3", "f3_39"][:width]))]
    art = load_artifact(out)
    assert score == pytest.approx(float(art.predict_rows(rows, allow_missing=True)[0]), abs=1e-7)


@pytest.mark.parametrize("encoding,message", [
    ("utf-16", ":1: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8 and "
               "try again"),
    ("latin-1", ":2: not UTF-8 text (byte 0xE9 at offset 15); is this the right file?"),
])
def test_cli_predict_refuses_other_encodings(pruned_dir, tmp_path, encoding, message):
    directory, _ = pruned_dir
    out = tmp_path / "m.shaver"
    run(["export", "--pruned", directory, "--out", out])
    path = tmp_path / "in.csv"
    path.write_bytes("f0,f1,f2,f3\ncafé,f1_7,f2_3,f3_39\n".encode(encoding))
    with pytest.raises(DataError) as err:
        run(["predict", "--artifact", out, "--input", path])
    assert str(err.value) == f"{path}{message}"


def test_cli_predict_reads_bom_crlf_and_gzip_alike(pruned_dir, tmp_path, capsys):
    import gzip

    directory, _ = pruned_dir
    out = tmp_path / "m.shaver"
    run(["export", "--pruned", directory, "--out", out])
    text = "f0,f1,f2,f3,label\nf0_1,f1_7,f2_3,f3_39,1\nnew,f1_2,,f3_1,0\n"
    variants = {"plain.csv": text.encode(), "bom.csv": b"\xef\xbb\xbf" + text.encode(),
                "crlf.csv": text.replace("\n", "\r\n").encode(),
                "rows.csv.gz": gzip.compress(text.encode())}
    printed = []
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        capsys.readouterr()
        assert run(["predict", "--artifact", out, "--input", tmp_path / name]) == 0
        printed.append(capsys.readouterr().out)
    assert len(printed[0].split()) == 3 and len(set(printed)) == 1


def test_cli_predict_damaged_archive_and_huge_field(pruned_dir, tmp_path):
    import gzip

    directory, _ = pruned_dir
    out = tmp_path / "m.shaver"
    run(["export", "--pruned", directory, "--out", out])
    rng = np.random.default_rng(0)
    body = "f0,f1,f2,f3\n" + "".join(f"{a},{b},x,y\n" for a, b in rng.integers(0, 10**9,
                                                                               (40000, 2)))
    path = tmp_path / "in.csv.gz"
    path.write_bytes(gzip.compress(body.encode(), compresslevel=1)[:-4096])
    with pytest.raises(DataError) as err:
        run(["predict", "--artifact", out, "--input", path])
    assert str(err.value) == f"{path}: cannot read the input (Truncated compressed stream)"
    path = tmp_path / "in.csv"
    path.write_text("f0,f1,f2,f3\n" + "x" * 200_000 + ",a,b,c\n")
    with pytest.raises(DataError) as err:
        run(["predict", "--artifact", out, "--input", path])
    assert str(err.value) == f"{path}: not a CSV file (field larger than field limit (131072))"


def test_cli_predict_refuses_long_rows_past_the_first_block(pruned_dir, tmp_path):
    directory, _ = pruned_dir
    out = tmp_path / "m.shaver"
    run(["export", "--pruned", directory, "--out", out])
    path = tmp_path / "in.csv"
    body = "f0,f1,f2,f3\n" + "f0_1,f1_7,f2_3,f3_39\n" * 5000 + "f0_1,f1_7,f2_3,f3_39,9\n"
    path.write_text(body)
    with pytest.raises(DataError) as err:
        run(["predict", "--artifact", out, "--input", path])
    assert str(err.value) == f"{path}:5002: 5 values, the header has 4"
    path.write_bytes(body.replace(",9\n", "\n").encode() + "é".encode("latin-1") + b"\n")
    with pytest.raises(DataError) as err:
        run(["predict", "--artifact", out, "--input", path])
    offset = len(body) - 2
    assert str(err.value) == (f"{path}:5003: not UTF-8 text (byte 0xE9 at offset {offset}); is "
                              "this the right file?")


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
    path.write_text("f0,f1,f2,f3\n")  # a header only: no rows, no scores
    assert run(["predict", "--artifact", out, "--input", path]) == 0
    assert capsys.readouterr().out == "probability\n"


@pytest.mark.parametrize("content", [
    b"a,b\n1,2\n",  # no column of the feature map
    b"f0,f1,F2,f3\nx,y,z,w\n",  # one misnamed
    b"f0,f1,f2,f3\nx,y,z\n",  # a short row
    "f0,f1,f2,f3\nx,y,z,w\n".encode("utf-16"),
    b"\xe9" + bytes(range(256)) * 4,
])
def test_cli_predict_refusals_are_one_line_and_exit_2(pruned_dir, tmp_path, capfd, content):
    from shaver.cli import main

    directory, _ = pruned_dir
    out = tmp_path / "m.shaver"
    run(["export", "--pruned", directory, "--out", out])
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    capfd.readouterr()
    code = main(["predict", "--artifact", str(out), "--input", str(path), "--output",
                 str(tmp_path / "scores.csv")])
    stdout, err = capfd.readouterr()
    assert code == 2 and stdout == ""
    assert err.startswith(f"error: {path}:") and err.count("\n") == 1 and err[:-1].isprintable()
    assert not (tmp_path / "scores.csv").exists()
