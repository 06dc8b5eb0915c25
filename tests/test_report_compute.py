"""The report's quality-against-compute section (bench/attribution/quality_vs_compute.py)."""

from __future__ import annotations

import json

import pytest

from shaver.cli import main
from shaver.report.compute_section import compute_document, compute_section, read_record
from shaver.report.html import render_html
from shaver.report.schema import ReportError, document_to_json
from test_report_render import synthetic_document


def _record() -> dict:
    points = [{"option": option, "seconds": t, "samples": 1000 * t, "passes": 0.1 * t,
               "dtype_used": "fp32", "auc": [0.76 + 0.001 * t, 0.73 + 0.001 * t, 0.69]}
              for option in ("paper (fp32)", "auto + cv") for t in (1.0, 2.0, 4.0)]
    return {"dataset": "toy", "model": "deepfm", "cpu": "AVX2", "epoch_seconds": 2.0,
            "sparsity": [0.8, 0.95, 0.99], "points": points,
            "taylor": {"auc": [0.757, 0.707, 0.655]}, "magnitude": {"auc": [0.749, 0.709, 0.707]},
            "converged": {"auc": [0.767, 0.740, 0.695]}}


def test_section_draws_one_figure_per_record_and_nothing_without():
    assert compute_section([]) == []
    html = "\n".join(compute_section([_record(), _record()]))
    assert html.count("data:image/png") == 2 and "Quality against compute" in html
    assert "one epoch 2.0 s" in html


def test_record_errors_name_the_file_and_the_missing_keys(tmp_path):
    bad = tmp_path / "qvc.json"
    bad.write_text("{not json")
    with pytest.raises(ReportError, match="cannot read the quality-vs-compute record"):
        read_record(bad)
    bad.write_text(json.dumps({"sparsity": [0.8], "points": []}))
    with pytest.raises(ReportError, match="missing epoch_seconds, taylor, magnitude, converged"):
        read_record(bad)


def test_shaver_report_renders_a_record_alone_or_beside_a_bench(tmp_path, capsys):
    folder = tmp_path / "qvc"
    folder.mkdir()
    (folder / "qvc.json").write_text(json.dumps(_record()))
    assert main(["report", str(folder)]) == 0
    alone = (folder / "report.html").read_text()
    assert "Quality against compute" in alone and alone.count("data:image/png") == 1
    assert render_html(compute_document(folder / "qvc.json")).count("data:image/png") == 1

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "report.json").write_text(document_to_json(synthetic_document()))
    assert main(["report", str(bench)]) == 0
    assert "Quality against compute" not in (bench / "report.html").read_text()
    (bench / "qvc.json").write_text(json.dumps(_record()))
    assert main(["report", str(bench)]) == 0
    assert "Quality against compute" in (bench / "report.html").read_text()


def test_default_cut_gets_its_own_row_when_measured():
    from shaver.report.compute_section import quality_vs_compute_figure

    record = _record()
    assert len(quality_vs_compute_figure(record).axes) == 3
    record["points"][1]["auc_auto"] = [0.77, 0.74, 0.71]  # measured at one cap only
    record["converged"]["auc_auto"] = [0.768, 0.741, 0.712]
    fig = quality_vs_compute_figure(record)
    assert len(fig.axes) == 6
    assert "default cut (auto)" in fig.axes[3].get_title()
    ceiling = [line.get_ydata()[0] for line in fig.axes[5].get_lines()
               if line.get_label() == "converged"]
    assert ceiling == [0.712]
