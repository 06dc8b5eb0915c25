"""Every door, one answer, with bags: on a dataset with a mean bag and a weighted sum bag,
`shaver bench`, `shaver prune` + `shaver export`, `shaver.prune()` + `export_artifact` and
`shaver fleet` write the same artifact, byte for byte, for the same budget (a sparsity, a
table-byte and an artifact-byte budget) on the same run and attribution.

The helpers (and the single-valued versions of these checks) are those of
tests/test_doors_agree.py and tests/test_one_budget_one_answer.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from bag_data import make_bags
from shaver.attribution.result import Attribution
from shaver.deploy.artifact import load_artifact
from shaver.deploy.fleet import fleet
from shaver.deploy.fleet_manifest import file_sha256
from shaver.models.registry import build_model
from shaver.report.harness import BenchConfig, run_bench
from shaver.table.budget import Budget
from shaver.train.checkpoint import model_fingerprint, save_run
from test_doors_agree import _api_artifact, _cli_artifact
from test_one_budget_one_answer import prune_and_deploy_cli  # noqa: F401 (autouse fixture)
from test_one_budget_one_answer import test_cli_and_api_write_the_same_artifact as one_answer


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny FM trained by the bench on the bag dataset, its attribution and its rows."""
    root = tmp_path_factory.mktemp("doors-bags")
    data = make_bags(root / "data", rows=1200)
    assert data.layout.has_bags and data.layout.weighted
    config = BenchConfig(data=str(data.path), dataset=None, models=["fm"],
                         methods=["auto", "shaver-bytes"], sparsities=[0.5], seeds=[0],
                         epochs=1, batch_size=256, device="cpu", html=False, max_samples=600,
                         table_fractions=[2])
    outcome = run_bench(config, root / "bench", quiet=True)
    run = root / "bench" / "runs" / "fm-s0"
    attribution = root / "bench" / "attributions" / "fm-s0-codebook.safetensors"
    return outcome, run, attribution


@pytest.mark.parametrize(("flag", "budget", "bench_row"), [
    ("--sparsity", "0.5", ("auto", "sparsity=0.5")),
    ("--table-bytes", "1/2", ("shaver-bytes", "table_bytes=1/2")),
])
def test_bench_prune_and_the_api_write_the_same_artifact_with_bags(bench, tmp_path, flag,
                                                                   budget, bench_row):
    outcome, run, attribution = bench
    rows = {(r.method, r.budget): r for r in outcome.rows}
    label = bench_row[1]
    name = f"auto-{label.replace('=', '-').replace('/', 'of')}"
    cli = _cli_artifact(run, attribution, tmp_path / "p", flag, budget, name)
    api, result = _api_artifact(run, attribution, label, tmp_path / "api.shaver")
    assert cli == api == rows[bench_row].artifact_sha256
    art = load_artifact(tmp_path / "api.shaver")
    assert result.model.layout.has_bags and result.model.layout.weighted
    assert art.layout == result.model.layout  # the bags travel in the artifact


def test_prune_the_api_and_a_fleet_class_write_the_same_artifact_with_bags(bench, tmp_path):
    _, run, attribution = bench
    _, dense = _api_artifact(run, attribution, 0.0, tmp_path / "dense.shaver",
                             method="shaver")
    size = dense.artifact_bytes - 200  # forces pruning or fewer bits
    api, result = _api_artifact(run, attribution, f"bytes={size}", tmp_path / "api.shaver")
    out = tmp_path / "p"
    cli = _cli_artifact(run, attribution, out, "--bytes", str(size), f"auto-bytes-{size}")
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"classes": [{"name": "c",
                                                                      "bytes": size}]}))
    fleet(run, attribution, tmp_path / "fleet.yaml", tmp_path / "fleet", evaluate=False)
    assert api == cli == file_sha256(tmp_path / "fleet" / "c.shaver")
    assert result.artifact_bytes == (tmp_path / "api.shaver").stat().st_size <= size


# -- one budget, one answer (tests/test_one_budget_one_answer.py) on a saved bag run ---------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A saved DeepFM run with bags and a random-phi codebook attribution beside it."""
    root = tmp_path_factory.mktemp("one-bags")
    dataset = make_bags(root / "ds", rows=300)
    torch.manual_seed(0)
    model = build_model("deepfm", dataset.field_dims, embed_dim=4, mlp_dims=[8],
                        layout=dataset.layout.to_json()).eval()
    run = save_run(root / "run", model, dataset=dataset, metrics={}, seed=0, train_config={})
    n, d = model.embedding.weight.shape
    phi = torch.from_numpy(np.random.default_rng(0).standard_normal((n, d)).astype(np.float32))
    Attribution(phi=phi, stderr=torch.zeros(n, d), count=5,
                codebook=torch.ones(len(dataset.field_dims), d), placeholder="codebook",
                model_fingerprint=model_fingerprint(model),
                dataset_fingerprint=dataset.fingerprint,
                field_dims=list(dataset.field_dims)).save(run / "attribution-codebook.safetensors")
    return run


@pytest.mark.parametrize("flag, text, budget, method", [
    pytest.param("--sparsity", "0.5", Budget.sparsity(0.5), "auto", id="sparsity-auto"),
    pytest.param("--sparsity", "0.5", Budget.sparsity(0.5), "shaver", id="sparsity-shaver"),
    pytest.param("--table-bytes", "1/2", Budget.table_bytes("1/2"), "auto",
                 id="table-bytes-auto"),
    # between the floor (7512 B) and the dense artifact (7712 B): the chooser has to cut
    pytest.param("--bytes", "7600B", Budget.bytes_(7600), "auto", id="bytes-auto"),
])
def test_cli_and_api_write_the_same_artifact_with_bags(run_dir, tmp_path, capsys, flag, text,
                                                       budget, method):
    one_answer(run_dir, tmp_path, capsys, flag, text, budget, method)
