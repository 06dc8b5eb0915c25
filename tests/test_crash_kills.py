"""kill -9 at random moments of `shaver prune` and `shaver fleet` (slow): every file on disk
stays consistent with its record, and a rerun completes and removes what the killed runs
left. Two prunes running at once keep both results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from shaver.deploy.fleet_manifest import file_sha256
from shaver.pruning.io import load_pruned
from shaver.pruning.runner import collect_rows
from shaver.runtime import load_artifact
from test_pruning_util import saved_run_with_random_phi

pytestmark = pytest.mark.slow
KILLS = 20


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return saved_run_with_random_phi(tmp_path_factory.mktemp("crash"))


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "shaver", *args, "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(args: list[str]) -> float:
    """Run to completion; its wall time."""
    started = time.perf_counter()
    proc = _start(args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    return time.perf_counter() - started


def _kill_at_random_moments(args: list[str], check, seed: int) -> None:
    rng = np.random.default_rng(seed)
    whole = _finish(args)
    for _ in range(KILLS):
        proc = _start(args)
        time.sleep(float(rng.uniform(0.2, whole)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        check()


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_killed_prunes_leave_consistent_cuts_and_a_rerun_cleans_up(run_dir, tmp_path):
    out = tmp_path / "pruned"
    args = ["prune", "--run", str(run_dir), "--method", "shaver", "--sparsity", "0.3,0.6,0.9",
            "--params", "10", "--out", str(out)]

    def check():
        for info in out.glob("*/pruned.json"):  # every cut on disk is whole and loads
            cut = load_pruned(info.parent, device="cpu")
            assert cut.info["row"]["kept"] == int(cut.model.embedding.mask.sum())
        if (out / "results.json").exists():  # a results table is whole JSON of whole cuts
            for row in json.loads((out / "results.json").read_text()):
                assert (out / row["path"].split("/")[-1] / "pruned.json").is_file()

    _kill_at_random_moments(args, check, seed=0)
    _finish(args)
    assert _hidden(out) == []  # the killed runs' temporaries are gone
    rows = json.loads((out / "results.json").read_text())
    assert [r["budget"] for r in rows] == [r["budget"] for r in collect_rows(out)]
    assert {r["budget"] for r in rows} == {"params=10", "sparsity=0.3", "sparsity=0.6",
                                           "sparsity=0.9"}


def test_killed_fleets_keep_a_true_manifest_and_a_rerun_cleans_up(run_dir, tmp_path):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(yaml.safe_dump({"classes": [
        {"name": "a", "bytes": "40KiB"}, {"name": "b", "bytes": "12KiB", "head": "int8",
                                          "format": "both"}]}))
    out = tmp_path / "fleet"
    args = ["fleet", "--run", str(run_dir), "--fleet", str(spec), "--out", str(out)]

    def check():
        manifest = out / "manifest.json"
        if not manifest.exists():
            return
        for entry in json.loads(manifest.read_text())["classes"]:
            for item in entry.get("files", []):  # a listed file is there, whole, as recorded
                path = out / item["file"]
                if path.exists():
                    assert file_sha256(path) == item["sha256"] or _rewritten(path)

    _kill_at_random_moments(args, check, seed=1)
    _finish(args)
    assert _hidden(out) == []
    doc = json.loads((out / "manifest.json").read_text())
    for entry in doc["classes"]:
        assert entry["status"] == "written"
        for item in entry["files"]:
            assert file_sha256(out / item["file"]) == item["sha256"]
    load_artifact(out / "a.shaver")


def _rewritten(path) -> bool:
    """A class being rebuilt replaces its file atomically: what is there still loads."""
    if path.suffix == ".shaver":
        load_artifact(path)
    return True


def test_two_prunes_at_once_keep_both_results(run_dir, tmp_path):
    out = tmp_path / "pruned"
    first = _start(["prune", "--run", str(run_dir), "--method", "shaver", "--sparsity", "0.5",
                    "--out", str(out)])
    second = _start(["prune", "--run", str(run_dir), "--method", "shaver", "--sparsity", "0.9",
                     "--params", "7", "--out", str(out)])
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
    budgets = [r["budget"] for r in json.loads((out / "results.json").read_text())]
    assert sorted(budgets) == ["params=7", "sparsity=0.5", "sparsity=0.9"]
