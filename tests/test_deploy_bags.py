"""Deployment of models with bags (multi-valued fields): artifact layout, exact sizes, the
numpy runtime, CompressedEmbedding and ONNX against torch (masked and tiered tables), empty
bags and all-pad rows, predict on slots."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from bag_data import make_bags
from shaver.cli import main
from shaver.data.feature_map import feature_map_of
from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.deploy.embedding import compressed_model
from shaver.deploy.onnx_bags import feeds_to_slots, slots_to_feeds
from shaver.deploy.onnx_export import export_onnx, random_feeds
from shaver.errors import ArtifactError, DataError, ShaverError
from shaver.layout import PAD, Bag, FieldLayout
from shaver.models.registry import build_model
from shaver.pruning.api import prune
from shaver.runtime.container import PREAMBLE
from shaver.runtime.tiered import TierSpec
from shaver.table.size import encode_feature_map, plan_bytes, predict_artifact_bytes
from shaver.table.tiers import tiered_copy
from test_deploy_support import FIELD_DIMS, MODEL_KWARGS, pruned_model

MODELS = list(MODEL_KWARGS)
#: field 1 (300 ids): a mean bag of <= 4; field 3 (40 ids): a weighted sum bag of <= 3.
BAGS = (Bag(1, 4, "mean"), Bag(3, 3, "sum", weighted=True))
LAYOUT = FieldLayout(len(FIELD_DIMS), BAGS)
MIXED = [TierSpec("int2"), TierSpec("int4", "row"), TierSpec("fp16")]
BOUNDS = np.concatenate([[0], np.cumsum(FIELD_DIMS)]).astype(np.int64)


def bag_model(name: str, table: str = "masked", seed: int = 0):
    """(model with LAYOUT, its tier map (uint8 (n, d)), its tier specs): a masked table
    (one fp32 tier, artifact v1) or a mixed-precision tiered one (v2). The codebook is
    scaled down so that logits stay O(1) and 1e-5 is a float32 tolerance on them."""
    model, mask = pruned_model(name, seed=seed, layout=LAYOUT.to_json())
    model.embedding.codebook.mul_(0.1)
    if table == "masked":
        return model, mask.astype(np.uint8), [TierSpec("fp32")]
    rng = np.random.default_rng(seed)
    tmap = np.where(mask, rng.integers(1, len(MIXED) + 1, mask.shape), 0).astype(np.uint8)
    return tiered_copy(model, tmap, MIXED, model.embedding.codebook), tmap, MIXED


def random_slots(layout: FieldLayout, batch: int, seed: int):
    """(x (batch, slots), w (batch, slots)): random ids, bags of 0 to max_len values (row 0:
    every bag empty, row 1: every bag full), random weights (pads' weights are noise)."""
    rng = np.random.default_rng(seed)
    field = layout.slot_field
    x = rng.integers(BOUNDS[field], BOUNDS[field + 1], size=(batch, layout.num_slots))
    for b in layout.bags:
        lo = int(layout.starts[b.field])
        lengths = rng.integers(0, b.max_len + 1, size=batch)
        lengths[0], lengths[1] = 0, b.max_len
        pads = np.arange(b.max_len)[None, :] >= lengths[:, None]
        x[:, lo:lo + b.max_len][pads] = PAD
    w = rng.uniform(0.2, 2.0, size=x.shape).astype(np.float32)
    return x.astype(np.int64), w


def torch_logits(model, x, w=None):
    with torch.no_grad():
        return model(torch.as_tensor(x), None if w is None else torch.as_tensor(w)).numpy()


# -- the numpy runtime and CompressedEmbedding ----------------------------------------------
@pytest.mark.parametrize("table", ["masked", "tiered"])
@pytest.mark.parametrize("name", MODELS)
def test_runtime_and_compressed_model_equal_torch(tmp_path, name, table):
    model, _, _ = bag_model(name, table)
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    assert art.layout == LAYOUT
    x, w = random_slots(LAYOUT, 64, seed=1)
    ref = torch_logits(model, x, w)
    np.testing.assert_allclose(art.logits(x, w), ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(art.predict(x, w), 1 / (1 + np.exp(-ref)), atol=1e-5, rtol=0)
    # CompressedEmbedding: model.embed looks up the valid ids only (a 1-D tensor)
    np.testing.assert_allclose(torch_logits(compressed_model(art), x, w), ref, atol=1e-5, rtol=0)
    # pads read zeros in the runtime's slot embedding, real ids the table's rows
    emb = art.embed(x)
    assert not emb[x < 0].any()
    with torch.no_grad():
        rows = model.embedding(torch.as_tensor(x[x >= 0])).numpy()
    np.testing.assert_allclose(emb[x >= 0], rows, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_empty_bags_and_all_pad_rows(tmp_path, name):
    model, _, _ = bag_model(name)
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    x, w = random_slots(LAYOUT, 8, seed=2)
    bag_slots = np.isin(LAYOUT.slot_field, [b.field for b in BAGS])
    x[:, bag_slots] = PAD  # every bag of every row empty
    ref = torch_logits(model, x, w)
    np.testing.assert_allclose(art.logits(x, w), ref, atol=1e-5, rtol=0)
    # an empty bag pools to 0, whatever its pads' weights: the weights do not matter
    np.testing.assert_allclose(art.logits(x, w), art.logits(x), atol=1e-6, rtol=0)
    np.testing.assert_allclose(art.logits(x, w * 7), ref, atol=1e-5, rtol=0)
    if name == "lr":  # pooled vector 0: the logit is the bias plus the single fields' rows
        single = art.embed(x)[:, ~bag_slots].sum(axis=(1, 2))
        np.testing.assert_allclose(art.logits(x), single + art.head_tensors["bias"], atol=1e-6)


def test_runtime_refuses_bad_slots(tmp_path):
    model, _, _ = bag_model("fm")
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    x, w = random_slots(LAYOUT, 4, seed=3)
    with pytest.raises(DataError, match=r"integer array \(batch, 9\) \(slots of 4 fields"):
        art.predict(x[:, :4])
    bad = x.copy()
    bad[2, 0] = PAD  # a pad in a single-valued field
    with pytest.raises(DataError, match=r"row 2, slot 0 \(field 0\) is outside"):
        art.predict(bad)
    bad = x.copy()
    bad[1, 1] = 0  # field 0's id in field 1's bag
    with pytest.raises(DataError, match=r"row 1, slot 1 \(field 1\) .* \(or -1, a pad\)"):
        art.predict(bad)
    with pytest.raises(DataError, match="weights must be a float array shaped like the ids"):
        art.predict(x, w[:, :3])
    with pytest.raises(DataError, match="weights must be finite"):
        art.predict(x, np.full(x.shape, np.nan, np.float32))


# -- ONNX ----------------------------------------------------------------------------------
def _ort(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("table", ["masked", "tiered"])
@pytest.mark.parametrize("name", MODELS)
def test_onnx_equals_torch(tmp_path, name, table):
    model, _, _ = bag_model(name, table)
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    session = _ort(export_onnx(art, tmp_path / "a.onnx"))
    assert [i.name for i in session.get_inputs()] == [
        "ids", "field1_values", "field1_offsets", "field3_values", "field3_offsets",
        "field3_weights"]
    feeds = random_feeds(art, 64, seed=5)  # empty and too long lists included
    x, w = feeds_to_slots(art.layout, feeds, art.field_names)
    logit, prob = session.run(None, feeds)
    ref = torch_logits(model, x, w)
    np.testing.assert_allclose(logit, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-ref)), atol=1e-5, rtol=0)
    np.testing.assert_allclose(art.logits(x, w), ref, atol=1e-5, rtol=0)
    # N = 0: every list of the batch empty
    empty = {k: (v[:0] if k.endswith(("_values", "_weights")) else
                 np.zeros_like(v) if k.endswith("_offsets") else v) for k, v in feeds.items()}
    x0, w0 = feeds_to_slots(art.layout, empty, art.field_names)
    assert (x0[:, 1:5] == PAD).all() and (x0[:, 6:] == PAD).all()
    np.testing.assert_allclose(session.run(["logit"], empty)[0], torch_logits(model, x0, w0),
                               atol=1e-5, rtol=0)


def test_slots_to_feeds_inverts_feeds_to_slots(tmp_path):
    """An encoded slot batch (pads, empty and full bags) -> graph inputs -> the same slots;
    and onnxruntime on those inputs scores the batch as torch does."""
    model, _, _ = bag_model("deepfm")
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    x, w = random_slots(LAYOUT, 16, seed=7)
    feeds = slots_to_feeds(LAYOUT, x, w, art.field_names)
    assert list(feeds) == ["ids", "field1_values", "field1_offsets", "field3_values",
                           "field3_offsets", "field3_weights"]
    back, wb = feeds_to_slots(LAYOUT, feeds, art.field_names)
    np.testing.assert_array_equal(back, x)
    tags = slice(int(LAYOUT.starts[3]), int(LAYOUT.starts[4]))
    real = x[:, tags] >= 0
    np.testing.assert_array_equal(wb[:, tags][real], w[:, tags][real])
    session = _ort(export_onnx(art, tmp_path / "a.onnx"))
    np.testing.assert_allclose(session.run(["logit"], feeds)[0], torch_logits(model, x, w),
                               atol=1e-5, rtol=0)
    assert slots_to_feeds(LAYOUT, x, None, art.field_names)["field3_weights"].tolist() == \
        [1.0] * int(real.sum())
    with pytest.raises(ShaverError, match="expected \\(rows, 9\\)"):
        slots_to_feeds(LAYOUT, x[:, :4], w, art.field_names)


def test_onnx_pads_and_truncates_keeping_the_first_values(tmp_path):
    model, _, _ = bag_model("deepfm")
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    session = _ort(export_onnx(art, tmp_path / "a.onnx"))
    g = [int(BOUNDS[1]) + v for v in (3, 1, 4, 1, 5, 9)]  # six values, max_len 4
    t = [int(BOUNDS[3]) + v for v in (2, 7)]
    feeds = {"ids": np.array([[0, 305], [4, 300]], np.int64),
             "field1_values": np.array(g, np.int64), "field1_offsets": np.array([0, 6]),
             "field3_values": np.array(t, np.int64), "field3_offsets": np.array([0, 0]),
             "field3_weights": np.array([0.5, 2.0], np.float32)}
    x = np.array([[0, *g[:4], 305, PAD, PAD, PAD],
                  [4, PAD, PAD, PAD, PAD, 300, *t, PAD]], np.int64)
    w = np.ones(x.shape, np.float32)
    w[1, 6:8] = [0.5, 2.0]
    w[:, 8] = 0.0
    w[0, 6:8] = 0.0
    got = session.run(["logit"], feeds)[0]
    np.testing.assert_allclose(got, torch_logits(model, x, w), atol=1e-5, rtol=0)


def test_models_without_bags_keep_their_graph(tmp_path):
    model, _ = pruned_model("fm")
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    assert art.layout == FieldLayout.single(len(FIELD_DIMS)) and "layout" not in art.config
    session = _ort(export_onnx(art, tmp_path / "a.onnx"))
    assert [i.name for i in session.get_inputs()] == ["ids"]


def test_executorch_refuses_bag_models(tmp_path):
    from shaver.deploy.executorch_export import export_executorch

    model, _, _ = bag_model("fm")
    art = export_artifact(model, tmp_path / "a.shaver").path
    with pytest.raises(ArtifactError, match="ExecuTorch export does not support models with "
                       "multi-valued fields .*field1: bag of <= 4, mean.*ONNX"):
        export_executorch(art, tmp_path / "a.pte")


# -- the artifact: layout round trip, exact sizes, malformed layouts ------------------------
@pytest.fixture(scope="module")
def bag_data(tmp_path_factory):
    return make_bags(tmp_path_factory.mktemp("bags") / "data", rows=600)


def test_layout_round_trips_in_config_and_feature_map(tmp_path, bag_data):
    model = build_model("deepfm", bag_data, mlp_dims=[8]).eval()
    fmap = feature_map_of(str(bag_data.path))
    out = export_artifact(model, tmp_path / "a.shaver", metadata={"feature_map": fmap})
    art = load_artifact(out.path)
    assert art.layout == bag_data.layout == model.layout
    assert art.config["layout"] == bag_data.layout.to_json()
    assert art.feature_map["meta"]["layout"] == bag_data.layout.to_json()
    assert art.field_names == ["f0", "f1", "f2", "f3"]
    x, w = bag_data.slots("test")
    np.testing.assert_allclose(art.logits(x, w), torch_logits(model, x, w), atol=1e-5, rtol=0)
    # a feature map of another layout is refused before anything is written
    other = json.loads(json.dumps(fmap))
    other["meta"]["layout"][0]["max_len"] = 5
    with pytest.raises(ArtifactError, match=r"feature map's layout \(f.*bag of <= 5"):
        export_artifact(model, tmp_path / "b.shaver", metadata={"feature_map": other})
    assert not (tmp_path / "b.shaver").exists()


@pytest.mark.parametrize("table", ["masked", "tiered"])
def test_plan_bytes_is_the_file_size_of_a_bag_model(tmp_path, bag_data, table):
    model, tmap, tiers = bag_model("deepfm", table)
    meta = {"feature_map": encode_feature_map(feature_map_of(str(bag_data.path)))}
    size, table_bytes = plan_bytes(model, tmap, tiers)
    out = export_artifact(model, tmp_path / "a.shaver")
    assert out.bytes == size == (tmp_path / "a.shaver").stat().st_size
    assert table_bytes == load_artifact(out.path).table_bytes()
    assert predict_artifact_bytes(model, tmap > 0) == size
    # with the dataset's feature map (its spec and layout) in the artifact
    model = build_model("deepfm", bag_data, mlp_dims=[8]).eval()
    tmap = np.ones(tuple(model.embedding.weight.shape), np.uint8)
    size, _ = plan_bytes(model, tmap, [TierSpec("fp32")], metadata=meta)
    out = export_artifact(model, tmp_path / "b.shaver", metadata=meta)
    assert out.bytes == size == (tmp_path / "b.shaver").stat().st_size
    assert load_artifact(out.path).feature_map["meta"]["layout"] == bag_data.layout.to_json()


def test_prune_then_export_a_bag_model(tmp_path, bag_data):
    torch.manual_seed(0)
    model = build_model("deepfm", bag_data, mlp_dims=[8]).eval()
    scores = np.random.default_rng(0).random(tuple(model.embedding.weight.shape))
    for budget in (0.8, "1/4"):
        (result,) = prune(model, scores.astype(np.float32), [budget])
        out = export_artifact(result, tmp_path / "p.shaver")
        assert out.bytes == result.artifact_bytes == (tmp_path / "p.shaver").stat().st_size
        art = load_artifact(out.path)
        assert art.layout == bag_data.layout
        x, w = bag_data.slots("val")
        np.testing.assert_allclose(art.logits(x, w), torch_logits(result.model.eval(), x, w),
                                   atol=1e-5, rtol=0)


def _rewrite_header(tmp_path, path, edit) -> object:
    raw = path.read_bytes()
    version, old_len = PREAMBLE.unpack_from(raw)[1:3]
    header = json.loads(raw[PREAMBLE.size:PREAMBLE.size + old_len])
    edit(header)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    text += b" " * (-len(text) % 8)
    blob = PREAMBLE.pack(b"\x89SHAVER\n", version, len(text), zlib.crc32(text), 0) + text \
        + raw[PREAMBLE.size + old_len:]
    edited = tmp_path / "edited.shaver"
    edited.write_bytes(blob)
    return edited


@pytest.mark.parametrize("layout,match", [
    ([{"field": 9, "max_len": 4}], r"bag fields \[9\] must be distinct, sorted and in 0\.\.3"),
    ([{"field": 1, "max_len": 0}], "bad bag"),
    ([{"field": 1, "max_len": 4, "pooling": "max"}], "pooling one of sum, mean"),
    ([{"max_len": 4}], r"expected \{field, max_len"),
    ("genres", "expected a list of bags"),
    ([{"field": 1, "max_len": "four"}], "invalid literal"),
])
def test_malformed_layout_is_a_clear_artifact_error(tmp_path, layout, match):
    model, _, _ = bag_model("fm")
    path = export_artifact(model, tmp_path / "a.shaver").path

    def edit(header):
        header["model"]["layout"] = layout
    edited = _rewrite_header(tmp_path, path, edit)
    with pytest.raises(ArtifactError, match="malformed field layout in the model config .*"
                       + match):
        load_artifact(edited)


# -- predict on slots ------------------------------------------------------------------------
def test_predict_cli_reads_slot_ids(tmp_path, capsys):
    unweighted = FieldLayout(len(FIELD_DIMS), (Bag(1, 4, "mean"),))
    model, _ = pruned_model("deepfm", layout=unweighted.to_json())
    art_path = export_artifact(model, tmp_path / "a.shaver").path
    x, _ = random_slots(unweighted, 5, seed=4)
    ids = tmp_path / "ids.csv"
    ids.write_text("\n".join(",".join(map(str, row)) for row in x) + "\n")
    assert main(["predict", "--artifact", str(art_path), "--input", str(ids), "--ids"]) == 0
    scores = np.array(capsys.readouterr().out.split()[1:], dtype=np.float64)
    ref = 1 / (1 + np.exp(-torch_logits(model, x).astype(np.float64)))
    np.testing.assert_allclose(scores, ref, atol=1e-6)
    weighted, _, _ = bag_model("deepfm")
    art_path = export_artifact(weighted, tmp_path / "w.shaver").path
    assert main(["predict", "--artifact", str(art_path), "--input", str(ids), "--ids"]) == 2
    assert "--ids gives no weights, and this model's lists carry weights" in \
        capsys.readouterr().err


@pytest.mark.parametrize("name", ["deepfm", "dcn-mix"])
def test_quantised_head_and_calibration_with_bags(tmp_path, name):
    from shaver.models.base import set_calibration
    from shaver.table.head import fake_quantize_head

    model, _, _ = bag_model(name)
    set_calibration(model, 0.8, -0.1)
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver", head_dtype="int8").path)
    assert art.head_dtype == "int8" and art.calibration is not None
    reference = fake_quantize_head(model, "int8")
    feeds = random_feeds(art, 32, seed=6)
    x, w = feeds_to_slots(art.layout, feeds, art.field_names)
    ref = torch_logits(reference, x, w)
    np.testing.assert_allclose(art.logits(x, w), ref, atol=1e-5, rtol=0)
    session = _ort(export_onnx(art, tmp_path / "a.onnx"))
    np.testing.assert_allclose(session.run(["logit"], feeds)[0], ref, atol=1e-5, rtol=0)


# -- predict on raw rows with list columns -------------------------------------------------
LIST_ROWS = [("1", "u1", "a|b", "x:1;y:3"), ("0", "u2", "", ""), ("1", "u1", "b||b", "x:2"),
             ("0", "u3", "c|a|d|e", "y:0.5;x:0.5;z:1"), ("1", "u2", "rare", "x:4;;y:1")]


def test_predict_raw_rows_with_list_columns(tmp_path, capsys):
    from shaver.data.prepare import prepare_dataset

    spec = {"name": "lists", "input": {"format": "tsv", "header": True},
            "label": {"column": "label"},
            "fields": [{"name": "user"}, {"name": "tags", "kind": "list", "max_len": 3},
                       {"name": "hist", "kind": "list", "separator": ";", "weighted": True,
                        "pooling": "sum", "max_len": 2, "keep": "last"}],
            "split": {"method": "random", "fractions": [1.0, 0.0, 0.0]}}
    tsv = tmp_path / "in.tsv"
    tsv.write_text("label\tuser\ttags\thist\n" + "".join("\t".join(r) + "\n"
                                                         for r in LIST_ROWS))
    ds = prepare_dataset(spec, tsv, tmp_path / "prep", quiet=True)
    torch.manual_seed(0)
    model = build_model("deepfm", ds, mlp_dims=[8]).eval()
    out = export_artifact(model, tmp_path / "a.shaver",
                          metadata={"feature_map": feature_map_of(str(ds.path))})
    art = load_artifact(out.path)
    rows = [dict(zip(("label", "user", "tags", "hist"), r)) for r in LIST_ROWS]
    x, w = art.encode_slots(rows)
    assert (x[1, 1:] == PAD).all()  # empty lists
    ref = 1 / (1 + np.exp(-torch_logits(model, x, w).astype(np.float64)))
    np.testing.assert_allclose(art.predict_rows(rows), ref, atol=1e-6)
    assert main(["predict", "--artifact", str(out.path), "--input", str(tsv)]) == 0
    scores = np.array(capsys.readouterr().out.split()[1:], dtype=np.float64)
    np.testing.assert_allclose(scores, ref, atol=1e-6)


@pytest.mark.parametrize("name", ["fm", "dcn-mix"])
def test_a_model_whose_every_field_is_a_bag(tmp_path, name):
    """No single-valued field: the graph has no ``ids`` input (only the bags'), and runtime
    and ONNX still equal torch."""
    every = FieldLayout(len(FIELD_DIMS), tuple(
        Bag(f, 2 + f % 2, "mean" if f % 2 else "sum", weighted=f == 2)
        for f in range(len(FIELD_DIMS))))
    model, _ = pruned_model(name, seed=3, layout=every.to_json())
    model.embedding.codebook.mul_(0.1)
    art = load_artifact(export_artifact(model, tmp_path / "a.shaver").path)
    x, w = random_slots(every, 32, seed=4)
    ref = torch_logits(model, x, w)
    np.testing.assert_allclose(art.logits(x, w), ref, atol=1e-5, rtol=0)
    feeds = slots_to_feeds(every, x, w, art.field_names)
    assert "ids" not in feeds
    session = _ort(export_onnx(art, tmp_path / "a.onnx"))
    assert [i.name for i in session.get_inputs()] == list(feeds)
    back, _ = feeds_to_slots(every, feeds, art.field_names)
    np.testing.assert_array_equal(back, x)
    np.testing.assert_allclose(session.run(["logit"], feeds)[0], ref, atol=1e-5, rtol=0)
