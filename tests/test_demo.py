"""`shaver demo` end to end (slow): on a tiny MovieLens-shaped dataset placed in the built-in
cache (no download), and on generated Criteo-like data."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shaver.report.demo import DEMO_METHODS, DEMO_SPARSITIES, demo_config, demo_samples
from shaver.report.schema import load_document
from test_readme import _tiny_movielens

pytestmark = pytest.mark.slow


def _run_demo(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cache = tmp_path / "cache"
    if not cache.exists():
        _tiny_movielens(cache)
    env = {**os.environ, "SHAVER_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "shaver", "demo", "--out",
                           str(tmp_path / "demo"), "--attribution-samples", "600", "-q", *args],
                          env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)


def test_demo_runs_the_whole_pipeline(tmp_path):
    proc = _run_demo(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "demo"
    text = proc.stdout
    assert "report:" in text and "artifact:" in text and "numpy runtime vs torch" in text
    diff = float(text.split("max |diff| = ")[1].split()[0])
    assert diff < 1e-5
    artifact = out / "deepfm-s0-auto-sparsity0.95.shaver"  # the default's cut
    assert artifact.stat().st_size > 0
    doc = load_document(out / "report.json")
    dense = next(r for r in doc["results"] if r.method == "base").artifact_bytes
    compact = out / f"deepfm-s0-auto-bytes{dense // 3}.shaver"  # a third of the dense file
    assert 0 < compact.stat().st_size <= dense // 3
    assert "the default's cut for a third of the dense artifact" in text
    methods = {r.method for r in doc["results"]}
    assert methods == {"base", *DEMO_METHODS}
    assert len(doc["results"]) == 1 + len(DEMO_METHODS) * len(DEMO_SPARSITIES)
    assert doc["attributions"] and doc["attributions"][0]["trace"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png") == 4  # trade-off, convergence, heatmap, field shares

    again = _run_demo(tmp_path)  # everything reused: same table
    assert again.returncode == 0, again.stderr[-3000:]
    table = [line for line in text.splitlines() if line.startswith("deepfm")]
    assert table == [line for line in again.stdout.splitlines() if line.startswith("deepfm")]


def test_demo_on_synthetic_criteo(tmp_path):
    pytest.importorskip("shaver.data.synthetic")
    proc = _run_demo(tmp_path, "--dataset", "synthetic-criteo", "--rows", "4000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "synthetic-criteo" in (tmp_path / "demo" / "report.html").read_text()


def test_demo_config_is_the_documented_grid():
    config = demo_config("movielens-100k", 1000, seed=3, attribution_samples=100)
    assert list(config.models) == ["deepfm"] and list(config.seeds) == [3]
    assert list(config.methods) == list(DEMO_METHODS)
    assert config.max_samples == 100 and config.max_seconds is None  # machine-independent
    assert demo_samples(8) == 30_000 and demo_samples(39) == 6153
