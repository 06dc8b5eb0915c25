"""The HTML report renderer on synthetic results (structure checks; the browser test renders it)."""

from __future__ import annotations

import base64
import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from shaver.report.aggregate import pareto_frontier, summarize
from shaver.report.html import render_html, write_report
from shaver.report.plots import FINETUNED_MARKER, _draw_series, _styles, heatmap_figure
from shaver.report.schema import (
    COLUMNS,
    ReportError,
    ResultRow,
    document_to_json,
    load_document,
    make_document,
    read_jsonl,
    read_results_csv,
    rows_to_csv,
    validate_document,
)

FIELDS = ["user", "item", "age", "gender"]
DIM = 4
TOTAL = 40 * DIM


def synthetic_document(seeds=(0, 1)) -> dict:
    """A small but complete report document: 2 methods x 3 budgets x seeds + base + ptq."""
    rng = np.random.default_rng(7)
    rows = []
    for seed in seeds:
        rows.append(_row("base", "full", seed, 0.0, TOTAL, 0.78 + 0.002 * seed))
        rows.append(_row("ptq", "int8", seed, 0.0, TOTAL, 0.779, value_bytes=1))
        for method, drop in (("shaver", 0.01), ("magnitude", 0.04)):
            for sparsity in (0.5, 0.8, 0.95):
                kept = round(TOTAL * (1 - sparsity))
                per_field = rng.multinomial(kept, [0.4, 0.3, 0.2, 0.1]).tolist()
                auc = 0.78 - drop * sparsity * 3 + 0.001 * seed
                rows.append(_row(method, f"sparsity={sparsity}", seed, sparsity, kept, auc,
                                 per_field=per_field))
    attribution = {
        "dataset": "toy", "model": "deepfm", "seed": 0, "placeholder": "codebook",
        "samples": 4000, "seconds": 1.5, "tolerance": 0.01, "field_names": FIELDS,
        "mean_abs_phi": rng.random((len(FIELDS), DIM)).tolist(),
        "trace": [{"samples": 500 * (i + 1), "seconds": 0.2 * (i + 1), "ratio": 0.2 / (i + 1)}
                  for i in range(8)],
    }
    timings = [
        {"dataset": "toy", "model": "deepfm", "step": "attribute once", "seconds": 1.5},
        {"dataset": "toy", "model": "deepfm", "step": "prune per new budget", "seconds": 0.01,
         "note": "median"},
    ]
    return make_document(rows, title="synthetic <report>", attributions=[attribution],
                         timings=timings, environment={"python": "3.x", "seeds": "0,1"},
                         commands=["shaver bench --dataset toy"], fields={"toy": FIELDS})


def _row(method, budget, seed, sparsity, kept, auc, per_field=None, value_bytes=4):
    return ResultRow(dataset="toy", model="deepfm", method=method, budget=budget, seed=seed,
                     sparsity=sparsity, kept=kept, total=TOTAL, table_bytes=kept * value_bytes,
                     artifact_bytes=2000 + kept * value_bytes, auc=auc, logloss=0.6 - auc / 4,
                     seconds=0.01, kept_per_field=per_field)


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


@pytest.fixture(scope="module")
def rendered() -> str:
    return render_html(synthetic_document())


def test_report_is_self_contained_with_every_plot(rendered):
    text = rendered
    images = _images(text)
    # trade-off, convergence, heatmap, per-field share
    assert len(images) == 4
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") and len(img) > 1000 for img in images)
    assert "http://" not in text and "https://" not in text  # nothing fetched from the network
    for section in ("tradeoff", "results", "attribution", "fields", "timings", "environment"):
        assert f'id="{section}"' in text
    assert "synthetic &lt;report&gt;" in text  # titles are escaped
    assert "0.7810 &plusmn; 0.0014" in text  # base AUC: mean and std over two seeds
    assert "attribute once" in text and "shaver bench --dataset toy" in text


def test_svg_format_inlines_svg_elements():
    text = render_html(synthetic_document(seeds=(0,)), image_format="svg")
    assert "<?xml" not in text and "<img" not in text
    assert text.count("<svg") == 4


def test_unknown_image_format_is_refused():
    with pytest.raises(ReportError, match="unknown image format 'gif'"):
        render_html(synthetic_document(seeds=(0,)), image_format="gif")


def test_report_without_attribution_or_timings_leaves_their_sections_out():
    doc = synthetic_document(seeds=(0,))
    full = render_html(doc)
    assert '<h2 id="attribution">' in full and '<h2 id="timings">' in full
    doc["attributions"], doc["timings"] = [], []
    text = render_html(doc)
    assert '<h2 id="attribution">' not in text and '<h2 id="timings">' not in text
    assert '<h2 id="tradeoff">' in text and '<h2 id="results">' in text


def test_round_trip_through_json_renders_identical_bytes(tmp_path, rendered):
    doc = synthetic_document()
    path = tmp_path / "report.json"
    path.write_text(document_to_json(doc))
    back = load_document(path)
    assert back["results"] == doc["results"]
    # same results -> byte-identical report (no dates, no random ids)
    assert write_report(path, tmp_path / "r.html").read_text() == rendered


def test_csv_round_trip_keeps_every_column(tmp_path):
    rows = synthetic_document()["results"]
    path = tmp_path / "results.csv"
    path.write_text(rows_to_csv(rows))
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert read_results_csv(path) == rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sparsity": 1.5}, "sparsity 1.5 is outside"),
        ({"kept": 10**9}, "kept 1000000000 is outside"),
        ({"auc": 1.2}, "auc 1.2 is outside"),
        ({"seed": "x"}, "column 'seed' must be an integer"),
        ({"kept": 2.5}, "column 'kept' must be an integer"),
        ({"auc": "high"}, "column 'auc' must be a number"),
        ({"colour": "red"}, "unknown column"),
    ],
)
def test_bad_rows_are_named(change, message):
    data = synthetic_document(seeds=(0,))["results"][3].to_dict()
    data.update(change)
    with pytest.raises(ReportError, match=message):
        ResultRow.from_dict(data, where="results.csv:4")


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("dataset,model\ntoy,deepfm\n")
    with pytest.raises(ReportError, match=r"results.csv:2: missing column\(s\) method"):
        read_results_csv(path)


def test_unreadable_files_raise_report_errors(tmp_path):
    with pytest.raises(ReportError, match="cannot read results"):
        read_results_csv(tmp_path / "nope.csv")
    with pytest.raises(ReportError, match="cannot read the report document"):
        load_document(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ReportError, match="corrupt JSON"):
        load_document(bad)


def test_document_format_and_version_are_checked():
    with pytest.raises(ReportError, match="expected 'shaver-report'"):
        validate_document({"format": "other"})
    with pytest.raises(ReportError, match="format_version 9 is not supported"):
        validate_document({"format": "shaver-report", "format_version": 9})


def test_heatmap_needs_a_matrix():
    record = dict(synthetic_document(seeds=(0,))["attributions"][0], mean_abs_phi=[1.0, 2.0])
    with pytest.raises(ReportError, match="mean_abs_phi must be a non-empty fields x dim"):
        heatmap_figure(record)


def test_jsonl_ignores_only_a_torn_last_line(tmp_path):
    path = tmp_path / "cells.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a"')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a"\n{"a": 3}\n')
    with pytest.raises(ReportError, match="cells.jsonl:2: corrupt JSON line"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_summary_mean_and_sample_std_over_seeds():
    rows = [r for r in synthetic_document(seeds=(0, 1, 2))["results"] if r.method == "base"]
    (summary,) = summarize(rows)
    aucs = [r.auc for r in rows]
    assert summary.seeds == 3
    assert summary.auc == pytest.approx(np.mean(aucs))
    assert summary.auc_std == pytest.approx(np.std(aucs, ddof=1))
    single = summarize(rows[:1])[0]
    assert single.auc_std == 0.0


def test_pareto_frontier_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        pts = [(float(x), float(y)) for x, y in rng.integers(0, 6, size=(12, 2))]
        for higher in (True, False):
            s = 1 if higher else -1
            front = pareto_frontier(pts, higher_is_better=higher)
            for i, (x, y) in enumerate(pts):
                dominated = any(
                    (x2 <= x and s * y2 >= s * y) and (x2 < x or s * y2 > s * y)
                    for x2, y2 in pts
                )
                if dominated:
                    assert i not in front
            # every non-dominated (cost, quality) pair appears exactly once on the frontier
            best = {(x, y) for x, y in pts if not any(
                (x2 <= x and s * y2 >= s * y) and (x2 < x or s * y2 > s * y) for x2, y2 in pts)}
            assert {pts[i] for i in front} == best
            assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)


def test_pareto_frontier_skips_nan():
    assert pareto_frontier([(1.0, float("nan")), (2.0, 0.5)]) == [1]


def test_results_json_is_plain_json():
    text = document_to_json(synthetic_document(seeds=(0,)))
    doc = json.loads(text)
    assert doc["results"][0]["method"] == "base"


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    from shaver.report.schema import atomic_write_text

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "x.csv", "a\n")
    finally:
        os.umask(mask)
    assert path.read_text() == "a\n" and (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["x.csv"]  # no temporary left behind


def test_convergence_plot_draws_the_rule_each_run_stopped_by():
    import matplotlib.pyplot as plt

    from shaver.report.plots import convergence_plot

    def legends(fig):
        return [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]

    trace = [{"samples": 500 * (i + 1), "ratio": 0.2 / (i + 1), "regret": 0.3 / (i + 1)}
             for i in range(6)]
    sage = {"dataset": "toy", "model": "deepfm", "seed": 0, "tolerance": 0.01, "trace": trace}
    cut = {**sage, "stop": "cut", "stop_fraction": 0.05, "stop_reason": "stable"}
    fig, caption = convergence_plot([cut])
    assert len(fig.axes) == 1 and "stop fraction 0.05" in legends(fig)
    assert "tolerance 0.01" not in legends(fig)
    assert "cut rule" in caption and "SAGE" not in caption
    plt.close(fig)
    fig, caption = convergence_plot([cut, sage])
    assert len(fig.axes) == 2
    assert {"stop fraction 0.05", "tolerance 0.01"} <= set(legends(fig))
    assert "SAGE" in caption and "cut rule" in caption
    plt.close(fig)


def test_finetuned_cuts_are_summarised_and_drawn_apart():
    rows = [r for r in synthetic_document(seeds=(0,))["results"] if r.method == "shaver"]
    tuned = [ResultRow(**{**r.to_dict(), "auc": r.auc + 0.01, "finetuned": True,
                          "finetune_epochs": 2}) for r in rows]
    summaries = summarize(rows + tuned)
    assert len(summaries) == 2 * len(rows)
    assert {s.finetuned for s in summaries} == {False, True}
    fig, ax = plt.subplots()
    _draw_series(ax, summaries, "table_bytes", "auc", _styles({"shaver"}))
    handles, labels = ax.get_legend_handles_labels()
    lines = {label: handle.lines[0] for handle, label in zip(handles, labels)}
    assert set(lines) == {"shaver (paper)", "shaver (paper) fine-tuned"}
    assert lines["shaver (paper) fine-tuned"].get_marker() == FINETUNED_MARKER
    assert lines["shaver (paper)"].get_marker() != FINETUNED_MARKER
    drawn = np.asarray(lines["shaver (paper) fine-tuned"].get_ydata(), dtype=np.float64)
    want = [t.auc for t in sorted(tuned, key=lambda r: r.table_bytes)]
    np.testing.assert_allclose(drawn, want)
    plt.close(fig)
    assert ResultRow.from_dict({**tuned[0].to_dict(), "finetune_epochs": ""}).finetune_epochs \
        is None
    html = render_html(make_document(rows + tuned, title="t"))
    assert html.count("(fine-tuned)</td>") == len(tuned)
