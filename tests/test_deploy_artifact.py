"""Artifact export/load: exact sizes, exact predictions, layouts, quantisation, metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.errors import ArtifactError, DataError
from shaver.runtime.layout import LAYOUTS
from shaver.table.size import INFO_BYTES, predict_artifact_bytes
from test_deploy_support import FIELD_DIMS, offsets, pruned_model, random_ids, torch_proba

MODELS = ["lr", "fm", "deepfm", "dcn-v2", "dcn-mix"]
DTYPES = ["fp32", "fp16", "int8"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("value_dtype", DTYPES)
def test_predicted_size_is_file_size(tmp_path, name, value_dtype):
    for seed, keep in enumerate([[0.9, 0.3, 0.02, 0.6], [1, 1, 1, 1], [0, 0, 0, 0],
                                 [0.5, 0.99, 0.001, 0.05]]):
        model, mask = pruned_model(name, keep=keep, seed=seed)
        meta = {"budget": {"kind": "sparsity", "value": 0.5}, "metrics": {"auc": 0.7}}
        predicted = predict_artifact_bytes(model, mask, value_dtype=value_dtype, metadata=meta)
        out = export_artifact(model, tmp_path / "a.shaver", value_dtype=value_dtype,
                              metadata=meta)
        assert out.bytes == predicted == (tmp_path / "a.shaver").stat().st_size
        assert sum(out.breakdown.values()) == predicted


def test_size_ignores_volatile_metadata_but_counts_the_feature_map():
    model, mask = pruned_model("fm")
    base = predict_artifact_bytes(model, mask)
    assert predict_artifact_bytes(model, mask, metadata={"metrics": {"auc": 0.123456789}}) == base
    fmap = {"meta": {"field_names": ["a", "b", "c", "d"]}, "vocab": {"a": ["x", "é"]}}
    with_map = predict_artifact_bytes(model, mask, metadata={"feature_map": fmap})
    assert with_map > base
    assert predict_artifact_bytes(model, np.zeros_like(mask)) < base


def test_feature_map_round_trip(tmp_path):
    model, mask = pruned_model("fm")
    fmap = {"meta": {"field_names": ["a", "b", "c", "d"]}, "vocab": {"a": ["x", "é"]}}
    meta = {"feature_map": fmap, "note": "hi"}
    out = export_artifact(model, tmp_path / "a.shaver", metadata=meta)
    assert out.bytes == predict_artifact_bytes(model, mask, metadata=meta)
    art = load_artifact(out.path)
    assert art.feature_map == fmap
    assert art.info["note"] == "hi"


@pytest.mark.parametrize("name", MODELS)
def test_numpy_runtime_matches_torch_fp32(tmp_path, name):
    model, _ = pruned_model(name)
    export_artifact(model, tmp_path / "a.shaver")
    art = load_artifact(tmp_path / "a.shaver")
    x = random_ids(batch=64, seed=1)
    x[:, 0] = 0  # the kept zero entry, in every row of the batch
    np.testing.assert_allclose(art.predict(x), torch_proba(model, x), atol=1e-5, rtol=0)
    with torch.no_grad():
        np.testing.assert_array_equal(art.embed(x), model.embedding(torch.as_tensor(x)).numpy())


def test_every_layout_is_chosen_somewhere_and_round_trips(tmp_path):
    model, mask = pruned_model("fm", keep=[1.0, 0.5, 0.01, 0.3])
    export_artifact(model, tmp_path / "a.shaver")
    art = load_artifact(tmp_path / "a.shaver")
    assert set(art.layouts) == set(LAYOUTS)
    with torch.no_grad():
        expected = model.embedding.effective_weight().numpy()
    rows = np.arange(sum(FIELD_DIMS))
    field = np.searchsorted(np.cumsum(FIELD_DIMS), rows, side="right")
    ids = np.zeros((rows.size, len(FIELD_DIMS)), np.int64) + offsets()
    ids[rows, field] = rows
    got = art.embed(ids)[rows, field]
    np.testing.assert_array_equal(got, expected)


def test_kept_zero_stays_zero_and_pruned_rows_take_their_fields_codebook(tmp_path):
    model, mask = pruned_model("deepfm")
    export_artifact(model, tmp_path / "a.shaver")
    art = load_artifact(tmp_path / "a.shaver")
    codebook = model.embedding.codebook.numpy()
    x = random_ids(batch=8, seed=3)
    x[:, 0] = 0
    emb = art.embed(x)
    assert np.all(emb[:, 0, 0] == 0.0)  # a kept zero, not the codebook (3 +- noise)
    for b in range(x.shape[0]):
        for f in range(len(FIELD_DIMS)):
            row_mask = mask[x[b, f]]
            np.testing.assert_array_equal(emb[b, f][~row_mask], codebook[f][~row_mask])


@pytest.mark.parametrize("value_dtype,tol", [("fp16", 2e-3), ("int8", 5e-2)])
def test_quantised_values_are_close(tmp_path, value_dtype, tol):
    model, mask = pruned_model("deepfm")
    out = export_artifact(model, tmp_path / "a.shaver", value_dtype=value_dtype)
    art = load_artifact(out.path)
    x = random_ids(batch=32, seed=2)
    with torch.no_grad():
        ref = model.embedding(torch.as_tensor(x)).numpy()
    emb = art.embed(x)
    kept = mask[x]
    assert np.abs(emb - ref).max() < tol * max(1.0, np.abs(ref).max())
    sparse_fields = [f for f, lay in enumerate(art.layouts) if lay != "dense"]
    assert sparse_fields
    pruned = ~kept[:, sparse_fields]  # outside dense fields the codebook stays fp32
    np.testing.assert_array_equal(emb[:, sparse_fields][pruned], ref[:, sparse_fields][pruned])
    fp32 = export_artifact(model, tmp_path / "b.shaver").bytes
    assert out.bytes < fp32


def test_export_rejects_bad_input(tmp_path):
    model, mask = pruned_model("fm")
    with pytest.raises(ArtifactError, match="value dtype"):
        predict_artifact_bytes(model, mask, value_dtype="fp8")
    with pytest.raises(ArtifactError, match="mask must be bool"):
        predict_artifact_bytes(model, mask[:-1])
    with pytest.raises(ArtifactError, match="more than the 4096"):
        predict_artifact_bytes(model, mask, metadata={"blob": "x" * INFO_BYTES})
    with pytest.raises(ArtifactError, match="JSON-serialisable"):
        export_artifact(model, tmp_path / "a.shaver", metadata={"bad": object()})
    with pytest.raises(ArtifactError, match="does not exist"):
        export_artifact(model, tmp_path / "missing" / "a.shaver")
    with pytest.raises(ArtifactError, match="not a pruned directory"):
        export_artifact(tmp_path / "nothing", tmp_path / "a.shaver")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_unpruned_model_exports_dense(tmp_path):
    model, _ = pruned_model("fm")
    plain = torch.nn.Embedding(sum(FIELD_DIMS), model.embed_dim)
    plain.weight.data.copy_(model.embedding.weight.data)
    model.embedding = plain
    out = export_artifact(model, tmp_path / "a.shaver")
    art = load_artifact(out.path)
    assert set(art.layouts) == {"dense"}
    x = random_ids(batch=4)
    np.testing.assert_allclose(art.predict(x), torch_proba(model, x), atol=1e-6)


def test_runtime_rejects_ids_outside_their_field(tmp_path):
    model, _ = pruned_model("fm")
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    x = random_ids(batch=2)
    x[1, 2] = 0  # an id of field 0 in field 2's column
    with pytest.raises(DataError, match="row 1, field 2"):
        art.predict(x)
    with pytest.raises(DataError, match="integer array"):
        art.predict(x[:, :2])
    with pytest.raises(DataError, match="no feature map"):
        art.predict_rows([{"a": "1"}])


@pytest.mark.parametrize("dim", [16, 200])
def test_block_pointers_equal_the_prefix_sum(dim):
    from shaver.runtime.layout import block_pointers

    counts = np.random.default_rng(dim).integers(0, dim + 1, 1000)
    block_ptr, in_block = block_pointers(counts, dim)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = np.arange(1000)
    np.testing.assert_array_equal(block_ptr[rows >> 8] + in_block[rows], starts)
    assert in_block.dtype == (np.int16 if dim <= 128 else np.int32)


@settings(max_examples=25, deadline=None)
@given(field_dims=st.lists(st.integers(1, 300), min_size=1, max_size=5),
       dim=st.sampled_from([1, 3, 8, 16, 20]), keep=st.floats(0.0, 1.0),
       value_dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
@example(field_dims=[114], dim=3, keep=0.875, value_dtype="int8", seed=285)  # a large codebook
def test_property_size_and_lookup(tmp_path_factory, field_dims, dim, keep, value_dtype, seed):
    model, mask = pruned_model("fm", field_dims=field_dims, keep=[keep] * len(field_dims),
                               seed=seed, embed_dim=dim)
    path = tmp_path_factory.mktemp("p") / "a.shaver"
    out = export_artifact(model, path, value_dtype=value_dtype)
    assert out.bytes == predict_artifact_bytes(model, mask, value_dtype=value_dtype) \
        == path.stat().st_size
    art = load_artifact(path)
    x = random_ids(field_dims, batch=7, seed=seed)
    with torch.no_grad():
        ref = model.embedding(torch.as_tensor(x)).numpy()
    got = art.embed(x)
    if value_dtype == "fp32":
        np.testing.assert_array_equal(got, ref)
        return
    # each stored value is off by at most half a step of its field's grid: int8 steps are the
    # field's largest stored magnitude / 127 (a dense field stores its codebook values too, so
    # the effective table bounds it); fp16 rounds to 11 significant bits
    eff = model.embedding.effective_weight().detach().numpy()
    ends = np.cumsum([0, *field_dims])
    peak = np.array([np.abs(eff[a:b]).max() for a, b in zip(ends[:-1], ends[1:])])
    if value_dtype == "int8":
        allowed = np.broadcast_to(peak[None, :, None] / 254, ref.shape) * (1 + 1e-5) + 1e-7
    else:
        allowed = np.abs(ref) * 2.0 ** -11 + 1e-7
    assert np.all(np.abs(got - ref) <= allowed)


def test_block_pointers_across_chunks():
    from shaver.runtime.layout import block_pointers

    counts = np.random.default_rng(5).integers(0, 17, (1 << 16) * 2 + 300)
    block_ptr, in_block = block_pointers(counts, 16)
    rows = np.arange(counts.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    np.testing.assert_array_equal(block_ptr[rows >> 8] + in_block[rows], starts)


def test_export_leaves_the_model_untouched(tmp_path):
    model, _ = pruned_model("deepfm")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_artifact(model, tmp_path / "a.shaver", value_dtype="int8")
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
