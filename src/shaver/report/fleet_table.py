"""The report's fleet table: one row per device class of a ``shaver fleet`` manifest."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shaver.report.schema import ReportError, ResultRow, make_document


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
                   "<th class=l>cut (chosen on validation)</th><th>val AUC</th><th>test AUC</th>"
                   "<th>test LogLoss</th><th class=l>file</th></tr>")
        for entry in doc.get("classes", []):
            cls = entry.get("class", {})
            unmet = entry.get("status") == "unmet"
            row = entry.get("row", {})
            size = "" if unmet else f"{entry.get('bytes', 0):,}"
            sparsity = "" if unmet else f"{row.get('sparsity', 0):.4f}"
            chosen = entry.get("reason", "") if unmet else \
                f"{row.get('winner', '')} (head {row.get('head_dtype', '')})"
            out.append(
                f"<tr><td class=l>{_e(entry.get('name', ''))}</td>"
                f"<td>{int(cls.get('bytes', 0)):,}</td><td class=l>{_e(cls.get('values') or 'any')}"
                f"</td><td class=l>{_e(cls.get('head') or 'any')}</td>"
                f"<td class=l>{_e(cls.get('format', ''))}</td>"
                f"<td class=l>{_e(entry.get('status', ''))}</td><td>{size}</td>"
                f"<td>{sparsity}</td><td class=l>{_e(chosen)}</td>"
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
    report = make_document(fleet_rows(doc), title=title)
    report["fleets"] = [doc]
    return report


def fleet_rows(doc: Mapping[str, Any]) -> list[ResultRow]:
    """The written classes of a fleet manifest as result rows (method ``fleet``, budget the
    class name), so they sit on the report's accuracy-vs-size figure; their metrics are the
    written artifacts' test metrics, their sizes the cut's exact bytes."""
    run = Path(str(doc.get("source", {}).get("run", "fleet"))).name
    rows = []
    for entry in doc.get("classes", []):
        row, test = entry.get("row"), entry.get("metrics", {}).get("test")
        if entry.get("status") != "written" or not isinstance(row, dict) or not test:
            continue
        rows.append(ResultRow(
            dataset="fleet", model=run, method="fleet", budget=str(entry.get("name")), seed=0,
            sparsity=float(row["sparsity"]), kept=int(row["kept"]), total=int(row["total"]),
            table_bytes=int(row["table_bytes"]), artifact_bytes=int(row["artifact_bytes"]),
            auc=float(test["auc"]), logloss=float(test["logloss"]),
            seconds=float(row.get("seconds") or 0.0), winner=row.get("winner")))
    return rows
