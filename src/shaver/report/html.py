"""Render a report document as ONE self-contained HTML file (plots embedded, no network)."""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shaver import __version__
from shaver.report import plots
from shaver.report.aggregate import Summary, summarize
from shaver.report.compute_section import compute_section
from shaver.report.fleet_table import fleet_section
from shaver.report.schema import atomic_write_text, load_document, validate_document

log = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em;max-width:900px}
.plot{max-width:100%;height:auto}div.plot svg{max-width:100%;height:auto}
code,pre{background:#f6f6f6;padding:.1em .3em}pre{padding:.6em;overflow-x:auto}
.note{color:#555}
"""

_READING = (
    "Each trade-off figure places every compressed model by its size (x, log scale, larger to "
    "the right) and its test accuracy (y). Up and to the left is better for AUC, down and to "
    "the left for LogLoss; the dashed line is the uncompressed base model. The dotted Pareto "
    "frontier links "
    "the models no other model beats on both size and accuracy; a method whose points lie on "
    "it is the one to pick at that budget. 'artifact bytes' is what a device stores (kept "
    "values, index, codebook, dense head, first-order weights, feature map); 'table bytes' "
    "is the embedding table within it (values, index, scales, codebook); both are counted by "
    "the same size oracle for every row, base model included. 'kept entries' is the count "
    "used in the Shaver paper. A section with nothing recorded is left out."
)


def render_html(doc: Mapping[str, Any], *, image_format: str = "png") -> str:
    """The report as an HTML string. ``doc``: a validated report document (see schema)."""
    doc = validate_document(dict(doc))
    rows = doc["results"]
    summaries = summarize(rows)
    title = str(doc.get("title") or "shaver report")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">shaver {_e(__version__)}: {len(rows)} result rows, '
        f"{len({s.group for s in summaries})} (dataset, model, method) series.</p>",
        '<h2 id="reading">How to read this report</h2>',
        f"<p>{_e(_READING)}</p>",
        *_tradeoff_section(summaries, image_format),
        *_summary_tables(summaries),
        *_attribution_section(doc["attributions"], image_format),
        *compute_section(doc.get("quality_vs_compute", []), image_format),
        *_field_section(rows, doc["attributions"], doc["fields"], image_format),
        *_timing_section(doc["timings"]),
        *fleet_section(doc.get("fleets", [])),
        *_environment_section(doc["environment"], doc["commands"]),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    doc_or_path: Mapping[str, Any] | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    image_format: str = "png",
) -> Path:
    """Render a report document (or a ``report.json`` path) to ``out_path`` atomically."""
    if isinstance(doc_or_path, Mapping):
        doc = dict(doc_or_path)
    else:
        doc = load_document(doc_or_path)
    text = render_html(doc, image_format=image_format)
    path = atomic_write_text(out_path, text)
    log.info("report written to %s (%d KiB)", path, len(text.encode()) // 1024)
    return path


def _e(value: Any) -> str:
    return html.escape(str(value))


def _figure(fig: plots.Figure) -> str:
    return (f'<figure data-plot="{fig.slug}">{fig.html}'
            f"<figcaption><b>{_e(fig.title)}.</b> {_e(fig.caption)}</figcaption></figure>")


def _pairs(summaries: Sequence[Summary]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for s in summaries:
        seen.setdefault((s.dataset, s.model), None)
    return list(seen)


def _tradeoff_section(summaries: Sequence[Summary], fmt: str) -> list[str]:
    out = ['<h2 id="tradeoff">Accuracy vs size</h2>']
    if not summaries:
        return []
    for dataset, model in _pairs(summaries):
        out.append(_figure(plots.tradeoff_figure(summaries, dataset, model, fmt)))
    return out


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


def _pm(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.4f} &plusmn; {std:.4f}" if seeds > 1 else f"{mean:.4f}"


#: How methods are named in the report: the paper's method is labelled as such.
METHOD_LABELS = {"shaver": "shaver (paper)", "auto": "auto (default: best on validation)"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _summary_tables(summaries: Sequence[Summary]) -> list[str]:
    if not summaries:
        return []
    out = ['<h2 id="results">Results (mean &plusmn; std over seeds)</h2>']
    head = ("<tr><th class=l>method</th><th class=l>budget</th><th>seeds</th><th>sparsity</th>"
            "<th>kept entries</th><th>table bytes</th><th>artifact bytes</th><th>AUC</th>"
            "<th>LogLoss</th><th>seconds</th><th class=l>winner (auto, on validation)</th></tr>")
    for dataset, model in _pairs(summaries):
        out.append(f"<h3>{_e(dataset)} / {_e(model)}</h3><table class=results>{head}")
        for s in summaries:
            if (s.dataset, s.model) != (dataset, model):
                continue
            out.append(
                f"<tr><td class=l>{_e(method_label(s.method))}"
                f"{' (fine-tuned)' if s.finetuned else ''}</td><td class=l>{_e(s.budget)}</td>"
                f"<td>{s.seeds}</td><td>{s.sparsity:.4g}</td><td>{s.kept:,}</td>"
                f"<td>{_fmt_bytes(s.table_bytes)}</td><td>{_fmt_bytes(s.artifact_bytes)}</td>"
                f"<td>{_pm(s.auc, s.auc_std, s.seeds)}</td>"
                f"<td>{_pm(s.logloss, s.logloss_std, s.seeds)}</td><td>{s.seconds:.3f}</td>"
                f"<td class=l>{_e(s.winners or '-')}</td></tr>"
            )
        out.append("</table>")
    return out


def _attribution_section(attributions: Sequence[Mapping[str, Any]], fmt: str) -> list[str]:
    out = ['<h2 id="attribution">Attribution</h2>']
    if not attributions:
        return []
    out.append(_figure(plots.convergence_figure(attributions, fmt)))
    out += _attribution_cost_table(attributions)
    seen = set()
    for rec in attributions:
        key = (rec.get("dataset"), rec.get("model"), rec.get("placeholder"))
        if key in seen or not rec.get("mean_abs_phi"):
            continue
        seen.add(key)
        out.append(_figure(plots.heatmap_figure(rec, fmt)))
    return out


def _attribution_cost_table(attributions: Sequence[Mapping[str, Any]]) -> list[str]:
    """What each attribution cost: seconds, passes and training epochs of the same run (for
    records that carry a ``cost``, :mod:`shaver.attribution.cost`)."""
    costed = [rec for rec in attributions if isinstance(rec.get("cost"), Mapping)]
    if not costed:
        return []
    out = ["<table class=timings><tr><th class=l>dataset</th><th class=l>model</th>"
           "<th class=l>placeholder</th><th>seed</th><th>samples</th><th>passes</th>"
           "<th>seconds</th><th>training epochs</th></tr>"]
    for rec in costed:
        cost = rec["cost"]
        cells = [f"{cost[k]:.3g}" if isinstance(cost.get(k), (int, float)) else "-"
                 for k in ("passes", "seconds", "epochs")]
        out.append(f"<tr><td class=l>{_e(rec.get('dataset', ''))}</td><td class=l>"
                   f"{_e(rec.get('model', ''))}</td><td class=l>{_e(rec.get('placeholder', ''))}"
                   f"</td><td>{_e(rec.get('seed', ''))}</td><td>{_e(rec.get('samples', ''))}"
                   f"</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    out.append('<p class="note">Training epochs: the attribution\'s wall seconds over the mean '
               "seconds of one training epoch of the same base model, both timed in this "
               "run.</p>")
    return out


def _field_section(rows: Sequence[Any], attributions: Sequence[Mapping[str, Any]],
                   fields: Mapping[str, Sequence[str]], fmt: str) -> list[str]:
    out = ['<h2 id="fields">Where the kept entries are</h2>']
    names = dict(fields)
    names.update({a.get("dataset"): a.get("field_names") for a in attributions
                  if a.get("field_names")})
    figures = []
    for dataset, model in _pairs(summarize(rows)):
        fig = plots.field_share_figure(rows, dataset, model, names.get(dataset), fmt)
        if fig is not None:
            figures.append(_figure(fig))
    return out + figures if figures else []


def _timing_section(timings: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ['<h2 id="timings">Timings</h2>']
    if not timings:
        return []
    out.append("<table class=timings><tr><th class=l>dataset</th><th class=l>model</th>"
               "<th class=l>step</th><th>seconds</th><th class=l>note</th></tr>")
    for t in timings:
        out.append(
            f"<tr><td class=l>{_e(t.get('dataset', ''))}</td><td class=l>{_e(t.get('model', ''))}"
            f"</td><td class=l>{_e(t.get('step', ''))}</td><td>{float(t.get('seconds', 0)):.3f}"
            f"</td><td class=l>{_e(t.get('note', ''))}</td></tr>"
        )
    out.append("</table>")
    return out


def _environment_section(env: Mapping[str, Any], commands: Sequence[str]) -> list[str]:
    out = ['<h2 id="environment">Environment</h2><table class=environment>']
    for key in sorted(env):
        out.append(f"<tr><th class=l>{_e(key)}</th><td class=l>{_e(env[key])}</td></tr>")
    out.append("</table>")
    if commands:
        out.append("<h3>Commands</h3><pre>" + "\n".join(_e(c) for c in commands) + "</pre>")
    return out
