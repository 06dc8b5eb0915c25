"""`shaver bench` on a tiny learnable dataset: the grid, resume, and bad settings."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from shaver.report.cells import CellStore
from shaver.report.cli import register
from shaver.report.harness import BenchConfig, run_bench
from shaver.report.schema import ReportError, load_document, read_results_csv
from train_data import make_learnable

METHODS = ("auto", "shaver", "shaver-zero", "magnitude", "random", "taylor")
SPARSITIES = (0.5, 0.9, 1.0)


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench-data") / "tiny"
    make_learnable(path, rows=1500)
    return path


def _config(data_dir, **overrides) -> BenchConfig:
    settings = dict(data=str(data_dir), dataset=None, models=["fm"], methods=[*METHODS, "ptq"],
                    sparsities=list(SPARSITIES), seeds=[0], epochs=2, batch_size=256,
                    device="cpu", html=False, max_samples=3000)
    settings.update(overrides)
    return BenchConfig(**settings)


@pytest.fixture(scope="module")
def bench(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "run"
    return out, run_bench(_config(data_dir, html=True), out, quiet=True)


def test_grid_has_one_row_per_cell(bench):
    out, outcome = bench
    keys = {r.key for r in outcome.rows}
    expected = {("tiny", "fm", m, f"sparsity={s:g}", 0) for m in METHODS for s in SPARSITIES}
    expected |= {("tiny", "fm", "ptq", f"int{b}", 0) for b in (8, 4, 2)}
    assert keys == expected | {("tiny", "fm", "base", "full", 0)}
    assert outcome.computed == len(keys)
    ptq = {r.budget: r for r in outcome.rows if r.method == "ptq"}
    fields = 4  # table bytes: packed values + one fp32 scale per field, no index or codebook
    assert (ptq["int8"].table_bytes - 4 * fields) == 4 * (ptq["int2"].table_bytes - 4 * fields)
    assert ptq["int2"].artifact_bytes < ptq["int4"].artifact_bytes < ptq["int8"].artifact_bytes
    for row in (r for r in outcome.rows if r.method != "ptq"):
        assert 0.0 <= row.auc <= 1.0 and row.logloss > 0
        assert row.kept == round(row.total * (1 - row.sparsity))
        assert sum(row.kept_per_field) == row.kept
        assert row.artifact_bytes > 0
    by_budget = {r.budget: r.artifact_bytes for r in outcome.rows if r.method == "magnitude"}
    assert by_budget["sparsity=0.9"] < by_budget["sparsity=0.5"]


def test_auto_rows_name_their_winner_and_the_report_labels_the_paper(bench):
    out, outcome = bench
    auto = [r for r in outcome.rows if r.method == "auto"]
    assert len(auto) == len(SPARSITIES) and all(r.winner for r in auto)
    assert all(r.winner is None for r in outcome.rows if r.method != "auto")
    floor = [r for r in outcome.rows if r.budget == "sparsity=1" and r.method != "ptq"]
    assert floor and all(r.kept == 0 for r in floor)
    html = (out / "report.html").read_text()
    assert "shaver (paper)" in html and "winner (auto, on validation)" in html
    assert all(r.winner in html for r in auto)
    with open(out / "results.csv") as f:
        assert "winner" in f.readline()


def test_byte_budgets_of_the_default_grid(data_dir, tmp_path, caplog):
    from shaver.report.aggregate import pareto_frontier

    config = _config(data_dir, methods=["shaver", "ptq", "shaver-bytes"], sparsities=[0.9],
                     table_fractions=[4, 8, 32], html=True)
    with caplog.at_level("WARNING"):
        outcome = run_bench(config, tmp_path / "bytes", quiet=True)
    # 1/32 of this tiny table (66 bytes) is below its smallest table: said, not served
    assert "fm / shaver-bytes: table_bytes=1/32 cannot be served: budget table_bytes=1/32 " \
        "is below the smallest table this model can have at the allowed precisions" \
        in caplog.text
    rows = {(r.method, r.budget): r for r in outcome.rows}
    assert ("shaver-bytes", "table_bytes=1/32") not in rows
    fp32 = rows[("base", "full")].total * 4
    for fraction in (4, 8):
        row = rows[("shaver-bytes", f"table_bytes=1/{fraction}")]
        assert 0 < row.table_bytes <= fp32 // fraction  # exact table bytes within the budget
        assert 0.0 <= row.auc <= 1.0 and row.artifact_bytes > 0
    points = [(r.table_bytes, r.auc) for r in outcome.rows if r.method != "base"]
    front = pareto_frontier(points)
    undominated = {(x, y) for x, y in points if not any(
        x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)}
    assert {points[i] for i in front} == undominated and len(front) == len(undominated) > 0
    steps = [points[i] for i in front]  # the frontier the report draws: more bytes, more AUC
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(steps, steps[1:]))
    assert "shaver-bytes" in outcome.report_html.read_text()


def test_outputs_agree_with_each_other(bench):
    out, outcome = bench
    assert read_results_csv(out / "results.csv") == outcome.rows
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == len(outcome.rows)
    assert {s["method"] for s in data["summary"]} == {"base", "ptq", *METHODS}
    doc = load_document(out / "report.json")
    assert doc["results"] == outcome.rows
    steps = {t["step"] for t in doc["timings"]}
    assert "training epoch" in steps and "score once (taylor)" in steps
    assert "prune per new budget (magnitude)" in steps and "attribute once" in steps
    attributed = [t for t in doc["timings"] if t["step"] == "attribute once"]
    assert all("training epochs" in t["note"] for t in attributed)
    records = {a["placeholder"]: a for a in doc["attributions"]}
    assert set(records) == {"codebook", "zero"}
    for record in records.values():
        trace = record["trace"]
        assert len(trace) >= 3
        assert [t["samples"] for t in trace] == sorted(t["samples"] for t in trace)
        assert trace[-1]["samples"] == record["samples"] > 0
        assert record["stop"] == "cut" and record["stop_fraction"] > 0
        cost = record["cost"]  # in training epochs of the same base model
        assert cost["epochs"] == pytest.approx(cost["seconds"] / cost["epoch_seconds"])
        assert cost["seconds"] == record["seconds"] and cost["passes"] > 0
        regrets = [t["regret"] for t in trace]  # the cut rule's own measure, every chunk
        assert all(0 <= r < 1 for r in regrets) and regrets[-1] < regrets[0]
        assert len(record["mean_abs_phi"]) == 4 and len(record["mean_abs_phi"][0]) == 16
    assert (out / "attributions" / "fm-s0-codebook.safetensors").is_file()
    assert not list((out / "attributions").glob("*.ckpt"))  # resume state removed when done
    assert (out / "report.html").read_text().count("data:image/png") >= 2


def test_rerun_skips_finished_cells(bench, data_dir):
    out, first = bench
    again = run_bench(_config(data_dir), out, quiet=True)
    assert again.computed == 0
    assert again.rows == first.rows


def test_a_torn_cell_is_recomputed_and_nothing_else(bench, data_dir):
    out, first = bench
    cells = out / "cells.jsonl"
    lines = cells.read_text().splitlines(keepends=True)
    cells.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert len(CellStore(cells)) == len(lines) - 1  # torn line dropped, file rewritten clean
    again = run_bench(_config(data_dir), out, quiet=True)
    assert again.computed == 1
    assert {r.key for r in again.rows} == {r.key for r in first.rows}


def test_new_budget_adds_only_its_cells(bench, data_dir):
    out, first = bench
    more = run_bench(_config(data_dir, sparsities=[0.5, 0.9, 0.99]), out, quiet=True)
    assert more.computed == len(METHODS)


def test_other_settings_are_refused(bench, data_dir):
    out, _ = bench
    with pytest.raises(ReportError, match=r"other settings \(epochs\)"):
        run_bench(_config(data_dir, epochs=3), out, quiet=True)


def test_attribution_needs_a_stopping_rule(data_dir, tmp_path):
    config = _config(data_dir, methods=["shaver"], tolerance=None, max_samples=None)
    with pytest.raises(ReportError, match="attribution needs a stopping rule"):
        run_bench(config, tmp_path / "out", quiet=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"methods": ["pep"]}, "unknown method 'pep'"),
        ({"sparsities": [1.5]}, r"sparsities must lie in \(0, 1\], got \[1.5\]"),
        ({"sparsities": [0.0]}, r"sparsities must lie in \(0, 1\]"),
        ({"seeds": []}, "at least one model, one method and one seed"),
        ({"data": None, "dataset": "criteo-full"}, "unknown dataset 'criteo-full'"),
    ],
)
def test_bad_settings_are_named(data_dir, tmp_path, overrides, message):
    with pytest.raises(ReportError, match=message):
        run_bench(_config(data_dir, **overrides), tmp_path / "out", quiet=True)


def run_cli(argv: list[str]) -> int:
    """The report stage's subcommands alone (the CLI holds no logic of its own)."""
    parser = argparse.ArgumentParser(prog="shaver")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_bench_prints_table_and_report_command(bench, data_dir, capsys):
    out, _ = bench
    code = run_cli(["bench", "--data", str(data_dir), "--models", "fm", "--methods",
                 ",".join([*METHODS, "ptq"]), "--sparsity", "0.5,0.9,0.99", "--epochs", "2",
                 "--batch-size", "256", "--device", "cpu", "--max-samples", "3000",
                 "--out", str(out), "-q", "--no-html"])
    text = capsys.readouterr().out
    assert code == 0 and "magnitude" in text and "results.csv" in text
    assert run_cli(["report", str(out), "--out", str(out / "again.html")]) == 0
    assert (out / "again.html").stat().st_size > 10_000


def test_cli_report_without_document_fails(tmp_path):
    with pytest.raises(ReportError, match="no report document"):
        run_cli(["report", str(tmp_path)])


def test_seeds_give_spread_and_the_same_seed_the_same_numbers(data_dir, tmp_path):
    config = _config(data_dir, methods=["random"], seeds=[0, 1], sparsities=[0.5])
    first = run_bench(config, tmp_path / "a", quiet=True)
    second = run_bench(config, tmp_path / "b", quiet=True)

    def measured(rows):
        return [(r.key, r.auc, r.logloss, r.kept, r.artifact_bytes, r.kept_per_field)
                for r in rows]

    assert measured(first.rows) == measured(second.rows)  # reproducible from the seeds
    summary = json.loads((tmp_path / "a" / "results.json").read_text())["summary"]
    random_cell = next(s for s in summary if s["method"] == "random")
    assert random_cell["seeds"] == 2
    aucs = [r.auc for r in first.rows if r.method == "random"]
    assert random_cell["auc_std"] == pytest.approx(abs(aucs[0] - aucs[1]) / 2 ** 0.5)


def test_interrupted_training_is_resumed(data_dir, tmp_path):
    from shaver.data.store import open_dataset
    from shaver.models.registry import build_model
    from shaver.train.loop import fit

    out = tmp_path / "out"
    partial = out / "runs" / "fm-s0.partial"
    dataset = open_dataset(data_dir)
    fit(build_model("fm", dataset.field_dims, seed=0), dataset, epochs=1, batch_size=256,
        seed=0, device="cpu", out_dir=partial, quiet=True)  # as if killed after epoch 1
    first = json.loads((partial / "config.json").read_text())["metrics"]["history"]
    config = _config(data_dir, methods=["random"], sparsities=[0.5])  # epochs=2
    run_bench(config, out, quiet=True)
    assert not partial.exists()
    history = json.loads((out / "runs" / "fm-s0" / "config.json").read_text())["metrics"]
    assert [h["epoch"] for h in history["history"]] == [1, 2]
    assert history["history"][0] == first[0]  # epoch 1 reused (same timing record), not redone


@pytest.mark.parametrize("option", [["--sparsity", "0.5,lots"], ["--seeds", "0,x"]])
def test_cli_refuses_malformed_lists(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["bench", "--dataset", "movielens-100k", "--out", "x", *option])
    assert exit_info.value.code == 2
    assert "expected comma-separated" in capsys.readouterr().err


def test_synthetic_data_needs_enough_rows(tmp_path):
    from shaver.report.stages import open_bench_data

    with pytest.raises(ReportError, match="at least 1000 rows, got 10"):
        open_bench_data(data=None, dataset="synthetic-criteo", rows=10, workdir=tmp_path)


def test_demo_export_needs_its_budget_in_the_grid():
    from shaver.report.demo import _check_row

    with pytest.raises(ReportError, match="no auto result at sparsity=0.95"):
        _check_row([], "sparsity=0.95", {"auc": 0.7, "logloss": 0.5})
