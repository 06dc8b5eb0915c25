"""The report's figures (matplotlib, Agg backend), each returned as embeddable HTML.

Every function takes plain data (summaries, attribution records) and returns a
:class:`Figure` whose ``html`` is an ``<img>`` with a base64 PNG or an inline ``<svg>``, so
the report is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter, FuncFormatter, NullFormatter  # noqa: E402

from shaver.report.aggregate import Summary, pareto_frontier  # noqa: E402
from shaver.report.schema import ReportError, ResultRow  # noqa: E402

FORMATS = ("png", "svg")
#: Marker of fine-tuned cuts on the accuracy-vs-size figure (single-shot: the method's own).
FINETUNED_MARKER = "X"
_METHOD_ORDER = ("auto", "shaver", "shaver-zero", "magnitude", "taylor", "random", "ptq",
                 "shaver-bytes")


@dataclass(frozen=True)
class Figure:
    """One embedded plot: ``html`` is a self-contained ``<img>`` or ``<svg>`` element."""

    slug: str
    title: str
    caption: str
    html: str


def embed(fig: Any, slug: str, fmt: str = "png", dpi: int = 110) -> str:
    """Render a matplotlib figure as an HTML element (and close it)."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown image format {fmt!r}: expected one of {', '.join(FORMATS)}")
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_metadata(fmt))
    finally:
        plt.close(fig)
    if fmt == "png":
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return f'<img class="plot" id="{slug}" alt="{slug}" src="data:image/png;base64,{data}">'
    svg = buf.getvalue().decode("utf-8")
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline SVG in HTML
    return f'<div class="plot" id="{slug}">{svg}</div>'


def _metadata(fmt: str) -> dict[str, Any]:
    # No creation date: the same results give the same report bytes.
    return {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}


def _method_sort_key(method: str) -> tuple[int, str]:
    base = method.split(":")[0]
    rank = _METHOD_ORDER.index(base) if base in _METHOD_ORDER else len(_METHOD_ORDER)
    return (rank, method)


def _styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    markers = "osD^v<>ph*"
    cmap = plt.get_cmap("tab10")
    return {
        m: {"color": cmap(i % 10), "marker": markers[i % len(markers)]}
        for i, m in enumerate(sorted(methods, key=_method_sort_key))
    }


_AXES = (
    ("artifact_bytes", "artifact bytes (deployable file, log)"),
    ("table_bytes", "embedding table bytes (values, index, scales, codebook; log)"),
    ("kept_fraction", "kept fraction = 1 - sparsity (log)"),
)
_METRICS = (("auc", "test AUC", True), ("logloss", "test LogLoss", False))


def _x_value(s: Summary, axis: str) -> float:
    if axis == "kept_fraction":
        return 1.0 - s.sparsity
    value = getattr(s, axis)
    return math.nan if value is None else float(value)


def tradeoff_figure(
    summaries: Sequence[Summary], dataset: str, model: str, fmt: str = "png"
) -> Figure:
    """AUC and LogLoss vs artifact bytes, kept bytes and kept fraction, one series per method,
    error bars = std over seeds, the base model as a dashed line, the Pareto frontier in grey."""
    cell = [s for s in summaries if s.dataset == dataset and s.model == model]
    base = [s for s in cell if s.method == "base"]
    points = [s for s in cell if s.method != "base"]
    styles = _styles({s.method for s in points})
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), squeeze=False)
    for col, (axis, xlabel) in enumerate(_AXES):
        for row, (metric, ylabel, higher) in enumerate(_METRICS):
            ax = axes[row][col]
            _draw_series(ax, points, axis, metric, styles)
            xy = [(_x_value(s, axis), getattr(s, metric)) for s in points]
            xy = [(x, y) if x > 0 else (math.nan, y) for x, y in xy]
            front = pareto_frontier(xy, higher_is_better=higher)
            if len(front) > 1:
                fx, fy = zip(*[xy[i] for i in front])
                ax.step(fx, fy, where="post", color="0.55", lw=1.2, ls=":", label="Pareto frontier")
            for b in base:
                ax.axhline(getattr(b, metric), color="k", ls="--", lw=0.8, label="base model")
            ax.set_xscale("log")
            _log_ticks(ax, axis, [x for x, _ in xy if x > 0])
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.suptitle(f"{dataset} / {model}: accuracy vs size", y=1.07)
    fig.legend(unique.values(), unique.keys(), loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(len(unique), 8))
    slug = f"tradeoff-{_slug(dataset)}-{_slug(model)}"
    caption = (
        "Each point is one budget (mean over seeds; bars: standard deviation). Left: size of "
        "the deployable artifact; middle: the exact bytes of its embedding table (values, "
        "index, scales, codebook), counted alike for every row; right: "
        "kept fraction of embedding entries. The dotted grey line is the Pareto frontier over "
        "all methods (no point is both smaller and more accurate). Hollow crosses on dashed "
        "lines: the same cuts fine-tuned (same plan and bytes), where the grid has them."
    )
    return Figure(slug, f"{dataset} / {model}", caption, embed(fig, slug, fmt))


def _log_ticks(ax: Any, axis: str, xs: Sequence[float]) -> None:
    """Readable log-axis labels: bytes in B/kB/MB; minor labels only within one decade."""
    if axis.endswith("bytes"):
        formatter: Any = EngFormatter(unit="B")
    else:
        formatter = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_major_formatter(formatter)
    narrow = bool(xs) and max(xs) < 10 * min(xs)
    ax.xaxis.set_minor_formatter(formatter if narrow else NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7, labelrotation=30)


def _draw_series(ax: Any, points: Sequence[Summary], axis: str, metric: str,
                 styles: Mapping[str, Mapping[str, Any]]) -> None:
    """One series per method, single-shot; its fine-tuned cuts (if any) beside it in the
    method's colour with the :data:`FINETUNED_MARKER` and a dashed line."""
    for method in sorted(styles, key=_method_sort_key):
        for finetuned in (False, True):
            series = [s for s in points if s.method == method and s.finetuned == finetuned
                      and _x_value(s, axis) > 0]
            series.sort(key=lambda s: _x_value(s, axis))
            if not series:
                continue
            xs = [_x_value(s, axis) for s in series]
            ys = [getattr(s, metric) for s in series]
            errs = [getattr(s, f"{metric}_std") for s in series]
            label = "shaver (paper)" if method == "shaver" else method
            style = dict(styles[method])
            if finetuned:
                label += " fine-tuned"
                style.update(marker=FINETUNED_MARKER, ls="--", mfc="none")
            ax.errorbar(xs, ys, yerr=errs, label=label, capsize=2, ms=5, lw=1.3, **style)


def convergence_figure(attributions: Sequence[Mapping[str, Any]], fmt: str = "png") -> Figure:
    """What each attribution's stopping rule watched, against samples attributed (see
    :func:`convergence_plot`)."""
    fig, caption = convergence_plot(attributions)
    return Figure("convergence", "Attribution convergence", caption, embed(fig, "convergence", fmt))


def convergence_plot(attributions: Sequence[Mapping[str, Any]]) -> tuple[Any, str]:
    """(matplotlib figure, caption): the cut rule's worst regret (its threshold: the stop
    fraction) for runs stopped by ``cut``, SAGE's max(stderr) / (max(phi) - min(phi)) (its
    threshold: the tolerance) for the others; one panel per rule in use."""
    rules = {"cut": ("regret", "worst cut regret (share of kept |phi|)", "stop_fraction",
                     "stop fraction"),
             "sage": ("ratio", "max stderr / range(phi)", "tolerance", "tolerance")}
    used = [r for r in rules if any(_rule_of(rec) == r for rec in attributions)] or ["sage"]
    fig, axes = plt.subplots(1, len(used), figsize=(7.5 * len(used) ** 0.5 + 1, 4.2),
                             squeeze=False)
    for ax, rule in zip(axes[0], used):
        key, ylabel, limit_key, limit_name = rules[rule]
        limits = set()
        for rec in attributions:
            if _rule_of(rec) != rule:
                continue
            pts = [(t["samples"], t[key]) for t in rec.get("trace") or []
                   if t.get(key) is not None and math.isfinite(t[key]) and t[key] > 0]
            if not pts:
                continue
            xs, ys = zip(*pts)
            label = (f"{rec.get('dataset')}/{rec.get('model')} {rec.get('placeholder')} "
                     f"s{rec.get('seed')}")
            if rec.get("stop_reason"):
                label += f" (stopped: {rec['stop_reason']})"
            ax.plot(xs, ys, marker=".", label=label)
            if rec.get(limit_key):
                limits.add(float(rec[limit_key]))
        for limit in sorted(limits):
            ax.axhline(limit, color="k", ls="--", lw=0.8, label=f"{limit_name} {limit:g}")
        if not ax.lines:
            ax.text(0.5, 0.5, "no convergence trace recorded", ha="center", va="center",
                    transform=ax.transAxes)
        else:
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_xlabel("samples attributed")
        ax.set_ylabel(ylabel)
        ax.set_title(f"stopping rule: {rule}", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
    caption = " ".join(
        {"cut": "The cut rule (the default) stops, after --min-passes, once sampling noise "
                "could cost less than the stop fraction of the |phi| each cut of the "
                "report's grid keeps.",
         "sage": "The SAGE rule (the paper's) stops, after a full pass, once this ratio "
                 "falls below the tolerance."}[r] for r in used)
    return fig, caption


def _rule_of(record: Mapping[str, Any]) -> str:
    """The stopping rule an attribution record ran under (records before the cut rule: sage)."""
    return "cut" if record.get("stop") == "cut" else "sage"


def field_share_figure(
    rows: Sequence[ResultRow], dataset: str, model: str, field_names: Sequence[str] | None,
    fmt: str = "png", max_budgets: int = 4,
) -> Figure | None:
    """Share of kept entries per field at a few budgets, one bar per method (first seed)."""
    cell = [r for r in rows if r.dataset == dataset and r.model == model
            and r.kept_per_field and r.kept > 0 and 0 < r.sparsity < 1]
    if not cell:
        return None
    first_seed = min(r.seed for r in cell)
    cell = [r for r in cell if r.seed == first_seed]
    budgets = sorted({r.sparsity for r in cell})
    if len(budgets) > max_budgets:
        picks = np.linspace(0, len(budgets) - 1, max_budgets).round().astype(int)
        budgets = [budgets[i] for i in sorted(set(picks))]
    methods = sorted({r.method for r in cell}, key=_method_sort_key)
    styles = _styles(methods)
    m = len(cell[0].kept_per_field or [])
    names = list(field_names) if field_names and len(field_names) == m else [str(i) for i in range(m)]
    fig, axes = plt.subplots(len(budgets), 1, figsize=(max(7.0, 0.35 * m + 3), 2.4 * len(budgets)),
                             squeeze=False, sharex=True)
    width = 0.8 / len(methods)
    for ax, sparsity in zip(axes[:, 0], budgets):
        for j, method in enumerate(methods):
            match = [r for r in cell if r.method == method and r.sparsity == sparsity]
            if not match:
                continue
            share = np.asarray(match[0].kept_per_field, dtype=float) / match[0].kept
            ax.bar(np.arange(m) + (j - (len(methods) - 1) / 2) * width, share, width,
                   label=method, color=styles[method]["color"])
        ax.set_ylabel(f"sparsity {sparsity:.4g}")
        ax.grid(True, axis="y", alpha=0.25)
    axes[0, 0].legend(fontsize=8, ncol=len(methods))
    axes[-1, 0].set_xticks(np.arange(m))
    axes[-1, 0].set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    fig.suptitle(f"{dataset} / {model}: share of kept entries per field", y=1.02)
    slug = f"fields-{_slug(dataset)}-{_slug(model)}"
    caption = ("Fraction of the kept embedding entries that each field holds, at several "
               f"sparsities (seed {first_seed}).")
    return Figure(slug, f"{dataset} / {model}", caption, embed(fig, slug, fmt))


def heatmap_figure(record: Mapping[str, Any], fmt: str = "png") -> Figure:
    """Field x dimension heatmap of mean |phi| over each field's rows."""
    values = np.asarray(record["mean_abs_phi"], dtype=float)
    if values.ndim != 2 or values.size == 0:
        raise ReportError(
            f"attribution {record.get('dataset')}/{record.get('model')}: mean_abs_phi must be a "
            f"non-empty fields x dim matrix, got shape {values.shape}"
        )
    names = record.get("field_names") or [str(i) for i in range(values.shape[0])]
    fig, ax = plt.subplots(figsize=(0.35 * values.shape[1] + 3.5, 0.3 * values.shape[0] + 1.8))
    image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(np.arange(values.shape[0]))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("embedding dimension")
    fig.colorbar(image, ax=ax, label="mean |phi|")
    tag = f"{record.get('dataset')}/{record.get('model')} {record.get('placeholder')}"
    ax.set_title(tag)
    slug = "heatmap-" + _slug(f"{record.get('dataset')}-{record.get('model')}-"
                              f"{record.get('placeholder')}-{record.get('seed')}")
    caption = "Mean |Shapley value| of the entries of each field (rows) and dimension (columns)."
    return Figure(slug, tag, caption, embed(fig, slug, fmt))


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in str(text).lower())
    return html.escape("-".join(p for p in keep.split("-") if p))
