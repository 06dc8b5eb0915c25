"""Pruned directories: format, round trip, packed mask, and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from shaver.errors import CheckpointError
from shaver.pruning.io import load_pruned, read_info, save_pruned
from shaver.table.mask import MaskedEmbedding, pack_mask
from test_pruning_util import FIELD_DIMS, TinyModel, build_tiny, random_ids

INFO = {
    "dataset": {"path": "data/x", "fingerprint": "abc"},
    "model_fingerprint": "0123456789abcdef",
    "budget": {"kind": "sparsity", "value": 0.5, "label": "sparsity=0.5"},
    "scorer": "shapley", "order": "abs", "codebook": "fixed", "placeholder": "codebook",
    "metrics": {"auc": 0.7, "logloss": 0.5}, "artifact_bytes": 123,
}


def pruned_tiny(seed: int = 0) -> TinyModel:
    model = TinyModel(seed=seed).eval()
    w = model.embedding.weight.detach()
    mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(seed)) < 0.4
    model.embedding = MaskedEmbedding(w, mask, torch.randn(len(FIELD_DIMS), w.shape[1]),
                                      FIELD_DIMS)
    return model


def test_round_trip_reproduces_predictions(tmp_path):
    model = pruned_tiny()
    out = save_pruned(tmp_path / "p", model, INFO)
    run = load_pruned(out, device="cpu", builder=build_tiny)
    assert isinstance(run.model.embedding, MaskedEmbedding)
    assert not run.model.training
    x = random_ids(64)
    with torch.no_grad():
        assert torch.equal(run.model(x), model(x))
    assert torch.equal(run.model.embedding.mask, model.embedding.mask)
    info = run.info
    assert info["format"] == "shaver-pruned" and info["format_version"] == 1
    assert info["model"] == model.config()
    assert info["kept"] == model.embedding.kept
    assert info["total"] == sum(FIELD_DIMS) * 4
    assert info["finetuned"] is False
    for key, value in INFO.items():
        assert info[key] == value


def test_mask_is_stored_packed_as_bits(tmp_path):
    model = pruned_tiny(1)
    out = save_pruned(tmp_path / "p", model, INFO)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor("embedding.mask_packed")
    assert "embedding.mask" not in keys
    assert {"embedding.weight", "embedding.codebook", "lin.weight", "linear.weight"} <= keys
    assert packed.dtype == torch.uint8
    assert np.array_equal(packed.numpy(), pack_mask(model.embedding.mask.numpy()))
    assert packed.numel() == -(-sum(FIELD_DIMS) * 4 // 8)


def test_save_replaces_an_old_pruned_dir_but_not_other_paths(tmp_path):
    out = save_pruned(tmp_path / "p", pruned_tiny(0), INFO)
    second = pruned_tiny(2)
    save_pruned(out, second, {**INFO, "scorer": "magnitude"})
    assert read_info(out)["scorer"] == "magnitude"
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temp dirs left
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not a pruned directory"):
        save_pruned(other, second, INFO)
    assert (other / "keep.txt").read_text() == "precious"


def test_save_rejects_missing_info_and_plain_embedding(tmp_path):
    with pytest.raises(CheckpointError, match="lacks scorer"):
        save_pruned(tmp_path / "a", pruned_tiny(), {k: v for k, v in INFO.items()
                                                    if k != "scorer"})
    with pytest.raises(CheckpointError, match="MaskedEmbedding"):
        save_pruned(tmp_path / "b", TinyModel(), INFO)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_load_rejects_bad_directories(tmp_path):
    with pytest.raises(CheckpointError, match="pruned.json is missing"):
        load_pruned(tmp_path, builder=build_tiny)
    out = save_pruned(tmp_path / "p", pruned_tiny(), INFO)
    info_path = out / "pruned.json"
    good = info_path.read_text()
    info_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        load_pruned(out, builder=build_tiny)
    info_path.write_text(json.dumps({**json.loads(good), "format": "other"}))
    with pytest.raises(CheckpointError, match="expected 'shaver-pruned'"):
        load_pruned(out, builder=build_tiny)
    info_path.write_text(json.dumps({**json.loads(good), "format_version": 9}))
    with pytest.raises(CheckpointError, match="format_version 9"):
        load_pruned(out, builder=build_tiny)
    info_path.write_text(json.dumps({**json.loads(good), "model": None}))
    with pytest.raises(CheckpointError, match="model config"):
        load_pruned(out, builder=build_tiny)
    info_path.write_text(good)
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_pruned(out, builder=build_tiny)


def test_load_rejects_tensors_that_do_not_fit(tmp_path):
    out = save_pruned(tmp_path / "p", pruned_tiny(), INFO)
    info = json.loads((out / "pruned.json").read_text())
    info["model"]["embed_dim"] = 3
    (out / "pruned.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError):
        load_pruned(out, builder=build_tiny)
    with pytest.raises(CheckpointError, match="rebuild"):
        load_pruned(out, builder=lambda c: build_tiny({**c, "embed_dim": 0}))


def test_load_with_the_registry_models(tmp_path):
    registry = pytest.importorskip("shaver.models.registry")
    model = registry.build_model("deepfm", FIELD_DIMS, embed_dim=4).eval()
    w = model.embedding.weight.detach()
    mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    model.embedding = MaskedEmbedding(w, mask, torch.zeros(3, 4), FIELD_DIMS)
    run = load_pruned(save_pruned(tmp_path / "p", model, INFO), device="cpu")
    x = random_ids(32)
    with torch.no_grad():
        assert torch.equal(run.model(x), model(x))


def test_load_rejects_missing_or_bad_embedding_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    out = save_pruned(tmp_path / "p", pruned_tiny(), INFO)
    good = load_file(str(out / "model.safetensors"))
    save_file({k: v for k, v in good.items() if k != "embedding.codebook"},
              str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="lacks tensors embedding.codebook"):
        load_pruned(out, builder=build_tiny)
    save_file({**good, "embedding.mask_packed": good["embedding.mask_packed"][:-1].clone()},
              str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="bad embedding.mask_packed"):
        load_pruned(out, builder=build_tiny)
    save_file({**good, "embedding.codebook": torch.zeros(2, 4)}, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="codebook has shape"):
        load_pruned(out, builder=build_tiny)
