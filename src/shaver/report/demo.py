"""``shaver demo``: the whole pipeline on a small dataset in a few minutes.

prepare (built-in MovieLens-100k, or generated Criteo-like data) -> train DeepFM -> attribute
(Shapley values, codebook placeholder) -> prune at several budgets (the default ``auto``, the
paper's Shaver, and magnitude pruning for comparison) -> export the default's cut at one
budget as a deployable artifact, checked against the torch-free runtime, and the default's
cut for a byte budget of a third of the dense artifact (its precisions chosen by the
chooser; its test AUC measured by the runtime) -> HTML report. It is ``shaver bench`` with a
small grid, so a second run reuses everything already computed. Sizes are counted alike on
both sides of every percentage (the dense row includes the feature map, as artifacts do).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shaver.attribution.result import Attribution
from shaver.deploy.artifact import export_artifact
from shaver.pruning.api import prune
from shaver.report.harness import BenchConfig, BenchOutcome, format_table, run_bench
from shaver.report.schema import ReportError, ResultRow
from shaver.report.stages import open_bench_data
from shaver.runtime import load_artifact
from shaver.train.checkpoint import load_run, open_run_dataset
from shaver.train.evaluation import predict_proba
from shaver.train.metrics import auc_logloss

log = logging.getLogger(__name__)

DEMO_SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99)
DEMO_METHODS = ("auto", "shaver", "magnitude")
#: The budget exported as a deployable artifact.
EXPORT_SPARSITY = 0.95
#: Caps that keep the demo within a few minutes on 2 CPU cores.
DEMO_EPOCHS = 8
#: Attribution work of the demo in permutation steps (samples x fields x dim): 30000
#: MovieLens samples (8 fields x 16), about 6000 Criteo-like ones (39 x 16). A sample cap
#: rather than a time cap, so that the demo's numbers do not depend on the machine's speed.
DEMO_ATTRIBUTION_STEPS = 30_000 * 8 * 16
RUNTIME_CHECK_ROWS = 2000


@dataclass
class DemoOutcome:
    """What the demo produced and how long it took."""

    bench: BenchOutcome
    artifact: Path
    artifact_bytes: int
    runtime_max_abs_diff: float
    seconds: float
    compact: dict[str, Any] | None = None  # the byte budget's cut: bytes, plan, test AUC / LogLoss

    @property
    def report_html(self) -> Path | None:
        return self.bench.report_html

    def table(self) -> str:
        dense = next((r for r in self.bench.rows if r.method == "base"), None)
        lines = [format_table(self.bench.rows), ""]
        note = "" if dense is None or dense.artifact_bytes is None else (
            f" ({self.artifact_bytes / dense.artifact_bytes:.1%} of the dense model's "
            f"{dense.artifact_bytes / 1024:.1f} KiB)")
        lines.append(f"the default's artifact at sparsity {EXPORT_SPARSITY:g}: "
                     f"{self.artifact_bytes / 1024:.1f} KiB{note}; numpy runtime vs torch: "
                     f"max |diff| = {self.runtime_max_abs_diff:.2e}")
        if self.compact is not None and dense is not None and dense.artifact_bytes:
            c = self.compact
            lines.append(f"the default's cut for a third of the dense artifact: "
                         f"{c['bytes'] / 1024:.1f} KiB ({c['bytes'] / dense.artifact_bytes:.1%} "
                         f"of the dense model; plan {c['plan']}, head {c['head']}), test AUC "
                         f"{c['auc']:.4f} / LogLoss {c['logloss']:.4f} by the numpy runtime")
        return "\n".join(lines)


def demo_samples(num_fields: int, embed_dim: int = 16) -> int:
    """The demo's attribution sample cap for a table of ``num_fields`` x ``embed_dim``."""
    return max(1, DEMO_ATTRIBUTION_STEPS // (num_fields * embed_dim))


def demo_config(dataset: str, rows: int, seed: int, attribution_samples: int) -> BenchConfig:
    """The small grid the demo runs (DeepFM, Shaver vs magnitude, five sparsities)."""
    return BenchConfig(
        dataset=dataset, rows=rows, models=["deepfm"], methods=list(DEMO_METHODS),
        sparsities=list(DEMO_SPARSITIES), seeds=[seed], epochs=DEMO_EPOCHS, batch_size=2048,
        max_samples=attribution_samples, title=f"shaver demo: {dataset}")


def run_demo(dataset: str = "movielens-100k", rows: int = 100_000,
             out: str | Path = "reports/demo", seed: int = 0, quiet: bool = False,
             attribution_samples: int | None = None) -> DemoOutcome:
    """Run the demo into ``out`` (resumed if it is already there); see the module docstring.

    ``attribution_samples`` caps the attribution (default :func:`demo_samples`; it stops
    earlier once converged)."""
    started = time.perf_counter()
    out = Path(out)
    if attribution_samples is None:
        _, data = open_bench_data(data=None, dataset=dataset, rows=rows, workdir=out / "data",
                                  quiet=quiet)
        attribution_samples = demo_samples(data.num_fields)
    config = demo_config(dataset, rows, seed, attribution_samples)
    bench = run_bench(config, out, quiet=quiet)
    artifact, size, diff, compact = export_and_check(out, bench.rows, seed)
    return DemoOutcome(bench, artifact, size, diff, time.perf_counter() - started, compact)


def export_and_check(out: Path, rows: list[ResultRow], seed: int
                     ) -> tuple[Path, int, float, dict[str, Any]]:
    """Export the default's cut at :data:`EXPORT_SPARSITY` (the grid's ``auto`` row) and
    compare the numpy runtime's predictions with the torch model's on test rows; export the
    default's cut for a byte budget of a third of the dense artifact and score it on the
    test split with the runtime. (path, bytes, max |diff|, {"path", "bytes", "plan", "head",
    "auc", "logloss"} of the byte budget's cut)."""
    run = load_run(out / "runs" / f"deepfm-s{seed}", device="cpu")
    dataset = open_run_dataset(run)
    attribution = Attribution.load(out / "attributions" / f"deepfm-s{seed}-codebook.safetensors")
    (result,) = prune(run.model, attribution, [EXPORT_SPARSITY], dataset=dataset)
    label = result.budget.label
    _check_row(rows, label, result.metrics)
    path = out / f"deepfm-s{seed}-auto-{label.replace('=', '')}.shaver"
    exported = export_artifact(result, path)
    x_test, y_test = dataset.arrays("test")
    x = x_test[:RUNTIME_CHECK_ROWS]
    runtime_p = load_artifact(path).predict(x)
    torch_p = predict_proba(result.model, x, device="cpu")
    diff = float(np.max(np.abs(np.asarray(runtime_p, np.float64) - np.asarray(torch_p))))
    log.info("exported %s (%d bytes); runtime vs torch max |diff| %.2e", path, exported.bytes,
             diff)
    dense = next(r for r in rows if r.method == "base")
    budget = f"bytes={int(dense.artifact_bytes) // 3}"
    (small,) = prune(run.model, attribution, [budget], dataset=dataset)
    compact = path.with_name(f"deepfm-s{seed}-auto-{budget.replace('=', '')}.shaver")
    written = export_artifact(small, compact)
    auc, ll = auc_logloss(np.asarray(y_test), np.asarray(load_artifact(compact).predict(x_test)))
    return path, exported.bytes, diff, {"path": str(compact), "bytes": written.bytes,
                                        "plan": small.info["plan"],
                                        "head": small.info["head_dtype"], "auc": auc,
                                        "logloss": ll}


def _check_row(rows: list[ResultRow], label: str, metrics: dict[str, float]) -> None:
    """The exported cut is the grid's ``auto`` row at ``label`` (one budget, one answer)."""
    match = [r for r in rows if r.method == "auto" and r.budget == label]
    if not match:
        raise ReportError(f"the demo grid has no auto result at {label}")
    if (match[0].auc, match[0].logloss) != (metrics["auc"], metrics["logloss"]):
        raise ReportError(f"the exported cut at {label} differs from the grid's auto row "
                          f"(test AUC {metrics['auc']} vs {match[0].auc})")
