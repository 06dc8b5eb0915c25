"""The report's "quality against compute" section: test AUC after pruning vs attribution seconds.

Its input is the record ``bench/attribution/quality_vs_compute.py`` writes (``qvc.json``):
one trained model, one training epoch's seconds measured in the same run, Taylor and
magnitude references, a long attribution as the ceiling, and per estimator option a curve
of (seconds, test AUC at each sparsity). ``shaver report DIR`` adds the section when DIR holds
a ``qvc.json``; :func:`compute_document` makes a report of it alone.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shaver.report.schema import ReportError, make_document

QVC_FILE = "qvc.json"
_REFERENCES = (("taylor", "--"), ("magnitude", ":"), ("converged", "-"))


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``qvc.json`` record, checked for the keys the section draws."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read the quality-vs-compute record ({exc})") from exc
    missing = [k for k in ("sparsity", "epoch_seconds", "points", "taylor", "magnitude",
                           "converged") if not isinstance(record, dict) or k not in record]
    if missing:
        raise ReportError(f"{path}: not a quality-vs-compute record (missing "
                          f"{', '.join(missing)}; written by bench/attribution/"
                          f"quality_vs_compute.py)")
    return record


def quality_vs_compute_figure(record: Mapping[str, Any]) -> Any:
    """A matplotlib figure: one panel per sparsity, AUC against attribution seconds (log x)
    per option, the references as horizontal lines, one training epoch as a red line. When
    points hold ``auc_auto`` (the default cut, ``auto``; measured at some caps or all), a
    second row draws those (the ceiling's line then is its ``auto`` cut too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparsities = list(record["sparsity"])
    cuts = [("auc", "the paper's cut")]
    if any("auc_auto" in p for p in record["points"]):
        cuts.append(("auc_auto", "default cut (auto)"))
    fig, axes = plt.subplots(len(cuts), len(sparsities), figsize=(4.2 * len(sparsities),
                                                                  3.6 * len(cuts)),
                             squeeze=False)
    options = list(dict.fromkeys(p["option"] for p in record["points"]))
    for row, (key, cut) in enumerate(cuts):
        for k, (ax, s) in enumerate(zip(axes[row], sparsities)):
            for label in options:
                pts = [p for p in record["points"] if p["option"] == label and key in p]
                ax.plot([p["seconds"] for p in pts], [p[key][k] for p in pts], "o-",
                        label=label)
            for ref, style in _REFERENCES:
                values = record[ref].get(key, record[ref]["auc"])
                ax.axhline(values[k], ls=style, color="grey", label=ref)
            ax.axvline(record["epoch_seconds"], color="red", lw=0.8, label="1 epoch")
            ax.set_xscale("log")
            ax.set_title(f"sparsity {s:g}, {cut}", fontsize=9)
            ax.set_xlabel("attribution seconds")
            ax.set_ylabel("test AUC")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{record.get('dataset', '')} {record.get('model', '')}: quality vs compute "
                 f"({record.get('cpu', '')})", fontsize=9)
    fig.tight_layout()
    return fig


def compute_section(records: Sequence[Mapping[str, Any]], fmt: str = "png") -> list[str]:
    """HTML of every quality-vs-compute record in the document (nothing when there is none)."""
    if not records:
        return []
    from shaver.report.plots import embed

    out = ['<h2 id="compute">Quality against compute</h2>',
           '<p class="note">Test AUC after the paper\'s cut (and, in a second row when '
           "measured, after the default cut, auto) at each sparsity against the "
           "attribution's wall seconds, every option measured in one run on one machine; the "
           "red line is one training epoch of the same model in that run, the grey lines "
           "Taylor |w dL/dw|, magnitude and a long attribution (the ceiling).</p>"]
    for k, record in enumerate(records):
        epoch = float(record["epoch_seconds"])
        out.append(f"<p class=note>{html.escape(str(record.get('dataset', '')))} "
                   f"{html.escape(str(record.get('model', '')))}: one epoch {epoch:.1f} s, "
                   f"{html.escape(str(record.get('cpu', '')))}</p>")
        out.append(embed(quality_vs_compute_figure(record), f"quality-vs-compute-{k}", fmt))
    return out


def compute_document(record_path: str | os.PathLike[str],
                     title: str = "shaver: quality against compute") -> dict[str, Any]:
    """A report document holding one quality-vs-compute record (no grid results)."""
    report = make_document([], title=title)
    report["quality_vs_compute"] = [read_record(record_path)]
    return report
