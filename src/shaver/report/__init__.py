"""Benchmark harness, HTML report and demo: the last stage, which drives the others only
through their public Python APIs.

* :mod:`shaver.report.harness`: ``run_bench(BenchConfig(...), out)`` (``shaver bench``), the
  resumable grid models x methods x sparsities x seeds;
* :mod:`shaver.report.html`: ``write_report(doc_or_report_json, out_html)`` (``shaver
  report``), one self-contained HTML file;
* :mod:`shaver.report.demo`: ``run_demo(...)`` (``shaver demo``);
* :mod:`shaver.report.schema`: the results table (``ResultRow``) and report document.
"""
