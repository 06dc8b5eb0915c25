"""Attribution result file and the field-aware codebook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from shaver.attribution.codebook import field_codebook, zero_codebook
from shaver.attribution.result import Attribution
from shaver.errors import AttributionError, CheckpointError


def _attr(**over):
    g = torch.Generator().manual_seed(0)
    kw = dict(phi=torch.randn(7, 3, generator=g), stderr=torch.rand(7, 3, generator=g), count=42,
              codebook=torch.randn(2, 3, generator=g), placeholder="codebook",
              settings={"data": "train+val", "seed": 1}, model_fingerprint="ab" * 8,
              dataset_fingerprint="cd" * 8, field_dims=[3, 4])
    kw.update(over)
    return Attribution(**kw)


def test_round_trip_keeps_everything(tmp_path):
    a = _attr()
    path = a.save(tmp_path / "sub" / "a.safetensors")
    b = Attribution.load(path)
    assert torch.equal(a.phi, b.phi) and torch.equal(a.stderr, b.stderr)
    assert torch.equal(a.codebook, b.codebook)
    assert (b.count, b.placeholder, b.settings, b.field_dims) == (42, "codebook",
                                                                  a.settings, [3, 4])
    assert b.model_fingerprint == a.model_fingerprint
    assert b.dataset_fingerprint == a.dataset_fingerprint
    assert not list(tmp_path.glob("sub/.*")), "temporary file left behind"


def test_metadata_are_json_strings(tmp_path):
    from safetensors import safe_open
    path = _attr().save(tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "shaver-attribution" and meta["format_version"] == "2"
    assert json.loads(meta["count"]) == 42 and json.loads(meta["field_dims"]) == [3, 4]


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_load_bad_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        Attribution.load(path)


def test_load_missing_and_foreign(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Attribution.load(tmp_path / "nope.safetensors")
    save_file({"phi": torch.zeros(2, 2)}, str(tmp_path / "f.safetensors"), metadata={"format": "x"})
    with pytest.raises(CheckpointError, match="format is 'x'"):
        Attribution.load(tmp_path / "f.safetensors")
    save_file({"phi": torch.zeros(2, 2)}, str(tmp_path / "v.safetensors"),
              metadata={"format": "shaver-attribution", "format_version": "9"})
    with pytest.raises(CheckpointError, match="format_version"):
        Attribution.load(tmp_path / "v.safetensors")
    save_file({"phi": torch.zeros(2, 2)}, str(tmp_path / "m.safetensors"),
              metadata={"format": "shaver-attribution", "format_version": "1"})
    with pytest.raises(CheckpointError, match="missing stderr"):
        Attribution.load(tmp_path / "m.safetensors")
    t = {"phi": torch.zeros(7, 3), "stderr": torch.zeros(7, 3), "codebook": torch.zeros(2, 3)}
    meta = {"format": "shaver-attribution", "format_version": "1", "count": "{",
            "placeholder": "", "settings": "", "model_fingerprint": "",
            "dataset_fingerprint": "", "field_dims": ""}
    save_file(t, str(tmp_path / "j.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="corrupt metadata"):
        Attribution.load(tmp_path / "j.safetensors")


def test_inconsistent_shapes_rejected():
    with pytest.raises(CheckpointError, match="placeholder"):
        _attr(placeholder="mean")
    with pytest.raises(CheckpointError, match="same shape|one shape"):
        _attr(stderr=torch.zeros(7, 2))
    with pytest.raises(CheckpointError, match="codebook"):
        _attr(codebook=torch.zeros(2, 5))
    with pytest.raises(CheckpointError, match="field_dims"):
        _attr(field_dims=[3, 3])


def test_codebook_is_frequency_weighted_mean_and_minimises_distortion():
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(9, 4, generator=g)
    dims = [4, 2, 3]
    freq = np.array([5, 0, 1, 2, 3, 3, 0, 0, 0])
    book = field_codebook(weight, dims, freq)
    assert book.shape == (3, 4) and book.dtype == torch.float32
    brute = (weight[:4] * torch.tensor([5., 0, 1, 2])[:, None]).sum(0) / 8
    assert torch.allclose(book[0], brute, atol=1e-6)
    assert torch.allclose(book[1], weight[4:6].mean(0), atol=1e-6)  # equal weights
    assert torch.allclose(book[2], weight[6:9].mean(0), atol=1e-6)  # unseen field: plain mean
    # closed form = argmin of the frequency-weighted squared distortion
    w0 = torch.tensor([5., 0, 1, 2])
    def dist(c):
        return float((w0[:, None] * (weight[:4] - c) ** 2).sum())
    for _ in range(5):
        assert dist(book[0]) <= dist(book[0] + 0.01 * torch.randn(4, generator=g))


def test_codebook_bad_input():
    with pytest.raises(AttributionError, match="field_dims"):
        field_codebook(torch.zeros(5, 2), [2, 2], np.ones(5))
    with pytest.raises(AttributionError, match="frequencies has 4"):
        field_codebook(torch.zeros(5, 2), [2, 3], np.ones(4))
    with pytest.raises(AttributionError, match="non-negative"):
        field_codebook(torch.zeros(5, 2), [2, 3], -np.ones(5))
    assert torch.equal(zero_codebook(2, 3), torch.zeros(2, 3))
