"""The report's fleet table: one row per device class of a ``shaver fleet`` manifest."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shaver.report.schema import ReportError, make_document


def _e(value: Any) -> str:
    return html.escape(str(value))


def _metric(entry: Mapping[str, Any], split: str, key: str) -> str:
    value = entry.get("metrics", {}).get(split, {}).get(key)
    return "" if value is None else f"{float(value):.4f}"


def fleet_section(fleets: Sequence[Mapping[str, Any]]) -> list[str]:
    """HTML of every fleet manifest in the document (nothing when there is none)."""
    if not fleets:
        return []
    out = ['<h2 id="fleet">Device fleet</h2>',
           '<p class="note">One artifact per device class from one attribution (shaver fleet): '
           "the budget is the whole artifact (values, index, codebook, head, first-order "
           "weights, metadata); metrics are those of the written artifact.</p>"]
    for doc in fleets:
        seconds = doc.get("seconds")
        took = "" if seconds is None else f" in {float(seconds):.2f} s"
        out.append(f'<p class=note>{_e(doc.get("source", {}).get("run", "fleet"))}: '
                   f"{len(doc.get('classes', []))} classes{took}</p>")
        out.append("<table class=fleet><tr><th class=l>class</th><th>budget B</th>"
                   "<th class=l>values</th><th class=l>head</th><th class=l>format</th>"
                   "<th class=l>status</th><th>bytes</th><th>sparsity</th>"
                   "<th class=l>method</th><th>val AUC</th><th>test AUC</th>"
                   "<th>test LogLoss</th><th class=l>file</th></tr>")
        for entry in doc.get("classes", []):
            cls = entry.get("class", {})
            unmet = entry.get("status") == "unmet"
            size = (f"smallest {entry.get('smallest_bytes', 0):,}" if unmet
                    else f"{entry.get('bytes', 0):,}")
            sparsity = "" if unmet else f"{entry.get('cut', {}).get('sparsity', 0):.4f}"
            out.append(
                f"<tr><td class=l>{_e(entry.get('name', ''))}</td>"
                f"<td>{int(cls.get('bytes', 0)):,}</td><td class=l>{_e(cls.get('values', ''))}"
                f"</td><td class=l>{_e(cls.get('head', ''))}</td>"
                f"<td class=l>{_e(cls.get('format', ''))}</td>"
                f"<td class=l>{_e(entry.get('status', ''))}</td><td>{size}</td>"
                f"<td>{sparsity}</td><td class=l>{_e(entry.get('method', ''))}</td>"
                f"<td>{_metric(entry, 'val', 'auc')}</td><td>{_metric(entry, 'test', 'auc')}</td>"
                f"<td>{_metric(entry, 'test', 'logloss')}</td>"
                f"<td class=l>{_e(entry.get('file', ''))}</td></tr>")
        out.append("</table>")
    return out


def fleet_document(manifest: str | os.PathLike[str], title: str = "shaver fleet") -> dict[str, Any]:
    """A report document holding one fleet manifest (no grid results)."""
    path = Path(manifest)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read the fleet manifest ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != "shaver-fleet-manifest":
        raise ReportError(f"{path}: not a shaver fleet manifest")
    report = make_document([], title=title)
    report["fleets"] = [doc]
    return report
