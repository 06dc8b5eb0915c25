"""One budget, one answer: `shaver bench`, `shaver prune` + `shaver export`, `shaver.prune()` +
`export_artifact` and `shaver fleet` write the same artifact, byte for byte, for the same
budget (one of each kind) on the same run and attribution."""

from __future__ import annotations

import pytest
import yaml

from shaver.attribution.result import Attribution
from shaver.cli import main
from shaver.deploy.artifact import export_artifact
from shaver.deploy.fleet import fleet
from shaver.deploy.fleet_manifest import file_sha256
from shaver.pruning.api import prune
from shaver.report.harness import BenchConfig, run_bench
from shaver.train.checkpoint import load_run, open_run_dataset
from train_data import make_learnable


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("doors")
    data = make_learnable(root / "data", rows=1500)
    config = BenchConfig(data=str(data.path), dataset=None, models=["fm"],
                         methods=["auto", "shaver-bytes"], sparsities=[0.9], seeds=[0],
                         epochs=2, batch_size=256, device="cpu", html=False, max_samples=2000,
                         table_fractions=[2])
    outcome = run_bench(config, root / "bench", quiet=True)
    run = root / "bench" / "runs" / "fm-s0"
    attribution = root / "bench" / "attributions" / "fm-s0-codebook.safetensors"
    return outcome, run, attribution, root


def _cli_artifact(run, attribution, out, flag, budget, name):
    assert main(["prune", "--run", str(run), "--attribution", str(attribution), flag, budget,
                 "--out", str(out), "-q"]) == 0
    assert main(["export", "--pruned", str(out / name), "--out", str(out / "cli.shaver")]) == 0
    return file_sha256(out / "cli.shaver")


def _api_artifact(run, attribution, budget, path, **restrict):
    loaded = load_run(run, device="cpu")
    (result,) = prune(loaded.model, Attribution.load(attribution), [budget],
                      dataset=open_run_dataset(loaded), **restrict)
    export_artifact(result, path)
    return file_sha256(path), result


@pytest.mark.parametrize(("flag", "budget", "bench_row"), [
    ("--sparsity", "0.9", ("auto", "sparsity=0.9")),
    ("--table-bytes", "1/2", ("shaver-bytes", "table_bytes=1/2")),
])
def test_bench_prune_and_the_api_write_the_same_artifact(bench, tmp_path, flag, budget,
                                                         bench_row):
    outcome, run, attribution, _ = bench
    rows = {(r.method, r.budget): r for r in outcome.rows}
    label = bench_row[1]
    name = f"auto-{label.replace('=', '-').replace('/', 'of')}"
    cli = _cli_artifact(run, attribution, tmp_path / "p", flag, budget, name)
    api, _ = _api_artifact(run, attribution, label, tmp_path / "api.shaver")
    assert cli == api == rows[bench_row].artifact_sha256


@pytest.mark.parametrize("head", [None, "int8"])
def test_prune_the_api_and_a_fleet_class_write_the_same_artifact(bench, tmp_path, head):
    _, run, attribution, _ = bench
    loaded = load_run(run, device="cpu")
    (dense,) = prune(loaded.model, Attribution.load(attribution), [0.0], method="shaver",
                     dataset=open_run_dataset(loaded))
    size = dense.artifact_bytes - 200  # forces pruning or fewer bits (most of it is metadata)
    restrict = {} if head is None else {"heads": [head]}
    api, result = _api_artifact(run, attribution, f"bytes={size}", tmp_path / "api.shaver",
                                **restrict)
    flags = [] if head is None else ["--head", head]
    out = tmp_path / "p"
    assert main(["prune", "--run", str(run), "--attribution", str(attribution), "--bytes",
                 str(size), *flags, "--out", str(out), "-q"]) == 0
    assert main(["export", "--pruned", str(out / f"auto-bytes-{size}"), "--out",
                 str(out / "cli.shaver")]) == 0
    cls = {"name": "c", "bytes": size, **({} if head is None else {"head": head})}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"classes": [cls]}))
    fleet(run, attribution, tmp_path / "fleet.yaml", tmp_path / "fleet", evaluate=False)
    assert api == file_sha256(out / "cli.shaver") == file_sha256(tmp_path / "fleet" / "c.shaver")
    assert result.artifact_bytes == (tmp_path / "api.shaver").stat().st_size <= size


def test_a_kept_entry_budget_is_the_same_cut_from_the_cli_and_the_api(bench, tmp_path):
    _, run, attribution, _ = bench
    cli = _cli_artifact(run, attribution, tmp_path / "p", "--params", "40", "auto-params-40")
    api, result = _api_artifact(run, attribution, 40, tmp_path / "api.shaver")
    assert cli == api and result.kept <= 40
