"""Low-bit and tiered embedding tables (artifact format v2): sizes, runtime, ONNX, versions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.errors import ArtifactError
from shaver.runtime.container import PREAMBLE, parse_container
from shaver.runtime.lowbit import dequantize, group_scales, pack, quantize, unpack
from shaver.runtime.tiered import TierSpec
from shaver.table.plan import parse_value_dtype
from shaver.table.size import plan_bytes, predict_artifact_bytes
from shaver.table.tiers import TieredEmbedding, tiered_copy
from test_deploy_support import FIELD_DIMS, pruned_model, random_ids, torch_proba

MODELS = ["lr", "fm", "deepfm", "dcn-v2", "dcn-mix"]
LOWBIT = ["int4", "int2", "int4/row", "int2/row", "int8/row", "int8/field"]
MIXED = [TierSpec("int2"), TierSpec("int4", "row"), TierSpec("fp16")]


def tier_map_for(mask: np.ndarray, seed: int = 0, tiers: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(mask, rng.integers(1, tiers + 1, mask.shape), 0).astype(np.uint8)


def mixed_model(name: str = "deepfm", seed: int = 0, keep=None):
    model, mask = pruned_model(name, seed=seed, **({"keep": keep} if keep else {}))
    tmap = tier_map_for(mask, seed)
    return tiered_copy(model, tmap, MIXED, model.embedding.codebook), tmap


@given(bits=st.sampled_from([2, 4]), count=st.integers(0, 70), seed=st.integers(0, 99))
@settings(max_examples=40, deadline=None)
def test_pack_unpack_round_trip(bits, count, seed):
    codes = np.random.default_rng(seed).integers(0, 2 ** bits, count).astype(np.uint8)
    packed = pack(codes, bits)
    assert packed.size == (count * bits + 7) // 8
    np.testing.assert_array_equal(unpack(packed, count, bits), codes)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantisation_error_is_bounded_by_half_a_step(bits):
    w = np.random.default_rng(0).normal(size=400).astype(np.float32)
    group = np.repeat(np.arange(20), 20)
    scales = group_scales(w, group, 20, f"int{bits}", "field")
    deq = dequantize(quantize(w, scales[group], bits), scales[group], bits)
    levels = 2 ** bits - 1
    inside = np.abs(w) <= scales[group] * levels / 2
    assert np.all(np.abs(deq - w)[inside] <= scales[group][inside] / 2 + 1e-6)
    # a finer grid is never worse in squared error
    assert np.mean((deq - w) ** 2) < np.var(w)


def test_row_scales_are_stored_in_fp16_exactly():
    w = np.random.default_rng(1).normal(size=64).astype(np.float32) * 1e-3
    scales = group_scales(w, np.repeat(np.arange(4), 16), 4, "int4", "row")
    np.testing.assert_array_equal(scales, scales.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("value_dtype", LOWBIT)
def test_lowbit_size_is_exact_and_runtime_equals_fake_quant(tmp_path, name, value_dtype):
    for seed, keep in enumerate([[0.9, 0.3, 0.02, 0.6], [1, 1, 1, 1], [0, 0, 0, 0]]):
        model, mask = pruned_model(name, keep=keep, seed=seed)
        predicted = predict_artifact_bytes(model, mask, value_dtype=value_dtype)
        out = export_artifact(model, tmp_path / "a.shaver", value_dtype=value_dtype)
        assert out.bytes == predicted == (tmp_path / "a.shaver").stat().st_size
        art = load_artifact(out.path)
        assert art.version == 2
        parts = art.breakdown()
        dtype, scale = parse_value_dtype(value_dtype)
        spec = [TierSpec(dtype, scale or "field")]  # the size oracle of the same plan
        assert plan_bytes(model, mask.astype(np.uint8), spec) == (out.bytes, art.table_bytes())
        assert art.table_bytes() == sum(parts[k] for k in ("values", "index", "scales",
                                                           "codebook"))
        fake = tiered_copy(model, mask.astype(np.uint8), [TierSpec(dtype, scale or "field")],
                           model.embedding.codebook)
        x = random_ids(batch=64, seed=seed + 1)
        with torch.no_grad():
            np.testing.assert_array_equal(art.embed(x),
                                          fake.embedding(torch.as_tensor(x)).numpy())
        np.testing.assert_allclose(art.predict(x), torch_proba(fake, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_mixed_tiers_exact_size_runtime_and_reload(tmp_path, name):
    model, tmap = mixed_model(name)
    assert isinstance(model.embedding, TieredEmbedding)
    mask = tmap > 0
    out = export_artifact(model, tmp_path / "m.shaver")
    assert out.bytes == predict_artifact_bytes(model, mask) == (tmp_path / "m.shaver").stat().st_size
    tmap = model.embedding.tier_map.numpy()
    assert plan_bytes(model, tmap, MIXED) == (out.bytes, load_artifact(out.path).table_bytes())
    art = load_artifact(out.path)
    assert art.value_dtype == "int2/field+int4/row+fp16"
    x = random_ids(batch=128, seed=3)
    with torch.no_grad():
        np.testing.assert_array_equal(art.embed(x), model.embedding(torch.as_tensor(x)).numpy())
    np.testing.assert_allclose(art.predict(x), torch_proba(model, x), atol=1e-5, rtol=0)
    assert art.tables.kept == int(mask.sum())


def test_tiered_model_survives_a_pruned_directory(tmp_path):
    from shaver.pruning.io import load_pruned, save_pruned

    model, _ = mixed_model("deepfm")
    info = {"dataset": {}, "model_fingerprint": "x", "budget": {"kind": "bytes", "value": 1},
            "scorer": "shapley", "order": "abs", "codebook": "fixed", "placeholder": "codebook"}
    save_pruned(tmp_path / "p", model, info)
    loaded = load_pruned(tmp_path / "p", device="cpu").model
    assert isinstance(loaded.embedding, TieredEmbedding)
    assert [t.label for t in loaded.embedding.tiers] == [t.label for t in MIXED]
    x = torch.as_tensor(random_ids(batch=32, seed=4))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    a = export_artifact(model, tmp_path / "a.shaver")
    b = export_artifact(tmp_path / "p", tmp_path / "b.shaver", include_feature_map=False)
    assert load_artifact(a.path).tables.kept == load_artifact(b.path).tables.kept


def test_new_layouts_shrink_sparse_tiers(tmp_path):
    # one kept entry in a 300-row field: rowmap (38 + 2 bytes) beats sparse (300 + 1)
    model, mask = pruned_model("fm", seed=0)
    mask[:] = False
    mask[10, 3] = True
    model.embedding.mask.copy_(torch.from_numpy(mask))
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver", value_dtype="int4").path)
    assert art.tiers[0][1] == ["empty", "rowmap", "empty", "empty"]
    assert art.breakdown()["index"] == (300 + 7) // 8 + 2


@pytest.mark.parametrize("value_dtype", ["int4", "int2/row"])
def test_onnx_matches_runtime(tmp_path, value_dtype):
    pytest.importorskip("onnxruntime")
    from shaver.deploy.onnx_export import export_onnx

    model, mask = pruned_model("deepfm")
    out = export_artifact(model, tmp_path / "a.shaver", value_dtype=value_dtype)
    export_onnx(out.path, tmp_path / "a.onnx")  # checked against torch inside (1e-4)
    import onnxruntime as ort

    x = random_ids(batch=64, seed=9)
    session = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["probability"], {"ids": x})[0]
    np.testing.assert_allclose(got, load_artifact(out.path).predict(x), atol=1e-5, rtol=0)


def test_old_runtime_refuses_v2_by_version_and_v1_header_cannot_claim_int4(tmp_path):
    model, _ = pruned_model("fm")
    raw = (export_artifact(model, tmp_path / "a.shaver", value_dtype="int4").path).read_bytes()
    assert PREAMBLE.unpack_from(raw)[1] == 2
    import shaver.runtime.container as container

    old = container.READABLE_VERSIONS
    container.READABLE_VERSIONS = (1,)
    try:
        with pytest.raises(ArtifactError, match="format version 2 is not supported"):
            parse_container(raw)
    finally:
        container.READABLE_VERSIONS = old
    v1 = export_artifact(model, tmp_path / "b.shaver").path.read_bytes()
    assert PREAMBLE.unpack_from(v1)[1] == 1
    # a v1 header that names int4 is refused, never read as int8
    hlen = PREAMBLE.unpack_from(v1)[2]
    header = json.loads(v1[PREAMBLE.size:PREAMBLE.size + hlen])
    header["embedding"]["value_dtype"] = "int4"
    _rewrite_header_and_load(tmp_path, v1, header, "inconsistent embedding description")


def test_v2_header_with_unknown_dtype_is_refused_naming_the_known_ones(tmp_path):
    model, _ = pruned_model("fm")
    raw = export_artifact(model, tmp_path / "a.shaver", value_dtype="int4").path.read_bytes()
    hlen = PREAMBLE.unpack_from(raw)[2]
    header = json.loads(raw[PREAMBLE.size:PREAMBLE.size + hlen])
    header["embedding"]["tiers"][0]["value_dtype"] = "int3"
    _rewrite_header_and_load(tmp_path, raw, header,
                             "value dtype 'int3', which this shaver does not know "
                             r"\(it reads fp32, fp16, int8, int4, int2\)")


def _rewrite_header_and_load(tmp_path, raw: bytes, header: dict, match: str) -> None:
    import zlib

    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    text += b" " * (-len(text) % 8)
    version, old_len = PREAMBLE.unpack_from(raw)[1:3]
    data = raw[PREAMBLE.size + old_len:]
    blob = PREAMBLE.pack(b"\x89SHAVER\n", version, len(text), zlib.crc32(text), 0) + text + data
    path = tmp_path / "edited.shaver"
    path.write_bytes(blob)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(path)


@pytest.mark.parametrize("text,match", [
    ("int3", "unknown value dtype 'int3': expected one of fp32, fp16, int8, int4, int2, "),
    ("int4/col", "unknown value dtype 'int4/col'"),
    ("int4/", "unknown value dtype 'int4/'"),
])
def test_unknown_value_dtype_names_the_allowed_ones(text, match):
    with pytest.raises(ArtifactError, match=match):
        parse_value_dtype(text)
    model, mask = pruned_model("lr")
    with pytest.raises(ArtifactError, match="unknown value dtype"):
        predict_artifact_bytes(model, mask, value_dtype=text)


def test_tier_spec_and_map_errors():
    with pytest.raises(ArtifactError, match="unknown scale granularity 'col': expected one of "
                                            "field, row"):
        TierSpec("int4", "col")
    model, mask = pruned_model("lr")
    bad = mask.astype(np.uint8) * 3
    with pytest.raises(ArtifactError, match=r"names tier 2, but only 1 tiers are described"):
        tiered_copy(model, bad, [TierSpec("int4")], model.embedding.codebook)
    assert FIELD_DIMS


def test_cli_export_int4_and_inspect_table_bytes(tmp_path, capsys):
    from shaver.cli import main
    from shaver.pruning.io import save_pruned

    model, _ = pruned_model("deepfm")
    info = {"dataset": {}, "model_fingerprint": "x", "budget": {"kind": "bytes", "value": 1},
            "scorer": "shapley", "order": "abs", "codebook": "fixed", "placeholder": "codebook"}
    save_pruned(tmp_path / "p", model, info)
    out = tmp_path / "m.shaver"
    assert main(["export", "--pruned", str(tmp_path / "p"), "--dtype", "int4/row",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    art = load_artifact(out)
    assert "shaver artifact v2" in text and "values int4/row" in text
    assert f"table (values + index + scales + codebook): {art.table_bytes():,} bytes" in text
    assert main(["inspect", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["table_bytes"] == art.table_bytes() and doc["format_version"] == 2


def test_rest_and_rows_layouts_and_no_codebook_when_nothing_is_pruned(tmp_path):
    model, mask = pruned_model("deepfm", keep=[1, 1, 1, 1])
    # uniform PTQ: one tier holding everything, no index, no codebook
    out = export_artifact(model, tmp_path / "p.shaver", value_dtype="int2")
    art = load_artifact(out.path)
    assert art.tiers[0][1] == ["rest"] * 4
    parts = art.breakdown()
    n, d = mask.shape
    assert parts["index"] == 0 and parts["codebook"] == 0
    assert parts["values"] == n * d // 4 and parts["scales"] == 4 * 4
    # whole rows in a high tier, the remaining entries in a low one: rows + rest
    tmap = np.full(mask.shape, 2, np.uint8)
    tmap[::3] = 1
    tiers = [TierSpec("int8"), TierSpec("int2")]
    fake = tiered_copy(model, tmap, tiers, model.embedding.codebook)
    out = export_artifact(fake, tmp_path / "r.shaver")
    art = load_artifact(out.path)
    assert art.tiers[0][1] == ["rows"] * 4 and art.tiers[1][1] == ["rest"] * 4
    assert out.bytes == predict_artifact_bytes(fake, mask)
    x = random_ids(batch=64, seed=2)
    np.testing.assert_allclose(art.predict(x), torch_proba(fake, x), atol=1e-5, rtol=0)
    pytest.importorskip("onnxruntime")
    from shaver.deploy.onnx_export import export_onnx

    export_onnx(out.path, tmp_path / "r.onnx")


@pytest.mark.parametrize("value_dtype", ["fp32", "fp16", "int8", "int4", "int2/row"])
def test_one_module_serves_v1_and_v2_tables(tmp_path, value_dtype):
    from shaver.deploy.embedding import CompressedEmbedding, compressed_model

    model, _ = pruned_model("fm")
    out = export_artifact(model, tmp_path / "a.shaver", value_dtype=value_dtype)
    art = load_artifact(out.path)
    assert art.version == (1 if value_dtype in ("fp32", "fp16", "int8") else 2)
    x = torch.as_tensor(random_ids(batch=8, seed=5))
    with torch.no_grad():
        got = compressed_model(out.path).embedding(x).numpy()
        alone = CompressedEmbedding.from_artifact(out.path)(x).numpy()
    np.testing.assert_array_equal(got, art.embed(x.numpy()))
    np.testing.assert_array_equal(alone, got)
