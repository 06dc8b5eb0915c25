"""The attribution's cost in training epochs of the same run (shaver attribute, the report)."""

from __future__ import annotations

import pytest
import torch

from shaver.attribution.cost import (
    attribution_cost,
    describe_cost,
    history_epoch_seconds,
    run_epoch_seconds,
)
from test_attribution_helpers import any_model, tiny_dataset

torch.set_num_threads(2)


def test_epoch_seconds_are_the_mean_of_the_recorded_epochs():
    history = [{"epoch": 1, "seconds": 2.0}, {"epoch": 2, "seconds": 4.0},
               {"epoch": 3}, {"seconds": 0}, {"seconds": True}, "junk"]
    assert history_epoch_seconds(history) == 3.0
    assert history_epoch_seconds([]) is None and history_epoch_seconds(None) is None
    assert run_epoch_seconds({"metrics": {"history": history}}) == 3.0
    assert run_epoch_seconds({}) is None


def test_cost_in_epochs_seconds_and_passes():
    cost = attribution_cost(12.0, 0.64, 30.0)
    assert cost == {"seconds": 12.0, "passes": 0.64, "epoch_seconds": 30.0, "epochs": 0.4}
    assert describe_cost(cost) == ("12.0 s = 0.40 training epochs (one epoch 30.0 s), "
                                   "0.64 passes")
    bare = attribution_cost(12.0, None, None)
    assert bare["epochs"] is None
    assert describe_cost(bare) == "12.0 s (no training epoch recorded)"


def test_shaver_attribute_prints_and_records_its_cost_in_epochs(tmp_path, capsys):
    from shaver.attribution.result import Attribution
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    ds = tiny_dataset(tmp_path / "ds")
    history = {"history": [{"epoch": 1, "seconds": 2.0}, {"epoch": 2, "seconds": 4.0}]}
    run = save_run(tmp_path / "run", any_model("deepfm"), dataset=ds, metrics=history, seed=0,
                   train_config={})
    out = tmp_path / "a.safetensors"
    args = ["attribute", "--run-dir", str(run), "--max-samples", "16", "--batch-size", "8",
            "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(args) == 0
    cost = Attribution.load(out).settings["cost"]
    assert cost["epoch_seconds"] == 3.0 and cost["passes"] == pytest.approx(16 / 42)
    assert cost["epochs"] == pytest.approx(cost["seconds"] / 3.0)
    printed = capsys.readouterr().out
    assert f"cost: {describe_cost(cost)}" in printed and "training epochs" in printed
    bare = save_run(tmp_path / "bare", any_model("deepfm"), dataset=ds, metrics={}, seed=0,
                    train_config={})
    assert main(["attribute", "--run-dir", str(bare), *args[3:]]) == 0
    assert Attribution.load(out).settings["cost"]["epochs"] is None
    assert "no training epoch recorded" in capsys.readouterr().out


def test_the_report_states_each_attributions_cost_in_epochs():
    from shaver.report.html import render_html
    from shaver.report.schema import make_document

    record = {"dataset": "toy", "model": "deepfm", "seed": 0, "placeholder": "codebook",
              "samples": 4000, "seconds": 6.0, "trace": [],
              "cost": attribution_cost(6.0, 0.5, 4.0)}
    text = render_html(make_document([], attributions=[record]))
    assert "<th>training epochs</th>" in text and "<td>1.5</td>" in text
    assert "<td>0.5</td>" in text  # passes
    plain = render_html(make_document([], attributions=[{**record, "cost": None}]))
    assert "training epochs" not in plain
