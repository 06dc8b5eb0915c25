"""Synthetic Criteo generator: format, statistics, determinism, the hidden model's AUC."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shaver.data.prepare import prepare_dataset
from shaver.data.synthetic import _hex8, _zipf_ranks, auc_score, synth_criteo
from shaver.errors import DataError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "syn.txt"
    info = synth_criteo(path, 20_000, seed=3, scale=0.01, chunk_rows=7_000, quiet=True)
    return path, info


def test_format_and_statistics(synth):
    path, info = synth
    lines = path.read_text().splitlines()
    assert len(lines) == 20_000
    cols = [line.split("\t") for line in lines]
    assert {len(c) for c in cols} == {40}
    labels = np.array([int(c[0]) for c in cols])
    assert set(labels) <= {0, 1}
    assert abs(labels.mean() - 0.25) < 0.02 and info["positive_rate"] == pytest.approx(labels.mean())
    i12_missing = np.mean([c[12] == "" for c in cols])
    c22_missing = np.mean([c[13 + 22] == "" for c in cols])
    assert abs(i12_missing - 0.77) < 0.03 and abs(c22_missing - 0.76) < 0.03
    assert any(c[2].startswith("-") for c in cols)  # I2 has negative values like Criteo's
    c1 = [c[16] for c in cols if c[16]]  # C3: 101k values at scale 0.01
    assert all(len(v) == 8 and int(v, 16) >= 0 for v in c1[:100])
    _, counts = np.unique(c1, return_counts=True)
    counts = np.sort(counts)[::-1]
    assert counts[0] > 10 * np.median(counts)  # heavy head: Zipf-like
    assert 0.7 < info["hidden_auc"] < 0.9
    assert json.loads((path.parent / "syn.txt.json").read_text()) == info


def test_prepares_with_criteo_preset(synth, tmp_path):
    ds = prepare_dataset("criteo", synth[0], tmp_path / "d", quiet=True)
    assert ds.num_rows("all") == 20_000 and ds.num_fields == 39


def test_deterministic_and_seeded(tmp_path):
    digests = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        synth_criteo(tmp_path / name, 3_000, seed=seed, scale=0.001, chunk_rows=1_000, quiet=True)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_scale_sets_cardinalities(tmp_path):
    info = synth_criteo(tmp_path / "x", 100, scale=0.5, quiet=True)
    assert info["cardinalities"][2] == round(10131227 * 0.5)
    assert min(info["cardinalities"]) >= 2


def test_rows_must_be_positive(tmp_path):
    with pytest.raises(DataError, match="^rows must be positive, got 0$"):
        synth_criteo(tmp_path / "x", 0)
    assert not (tmp_path / "x").exists()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 5)), min_size=2, max_size=30))
def test_auc_matches_pairwise_count(pairs):
    y = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs], dtype=np.float64)
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        assert np.isnan(auc_score(y, p))
        return
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert auc_score(y, p) == pytest.approx(brute)


def test_hex_and_zipf_helpers():
    assert _hex8(np.array([0, 255, 0xDEADBEEF], dtype=np.uint32)).tolist() == [
        b"00000000", b"000000ff", b"deadbeef"]
    ranks = _zipf_ranks(np.random.default_rng(0), 100_000, 1000, 1.1)
    assert ranks.min() >= 0 and ranks.max() < 1000
    freq = np.bincount(ranks, minlength=1000)
    assert freq[0] > freq[9] > freq[99] > 0
