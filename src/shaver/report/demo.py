"""``shaver demo``: the whole pipeline on a small dataset in a few minutes.

prepare (built-in MovieLens-100k, or generated Criteo-like data) -> train DeepFM -> attribute
(Shapley values, codebook placeholder) -> prune at several budgets (the default ``auto``, the
paper's Shaver, and magnitude pruning for comparison) -> export one budget as a deployable
artifact, checked against the torch-free runtime, and again with int8 values and an int8 head
(its size and its test AUC measured by the runtime) -> HTML report. It is ``shaver bench`` with a small grid, so a second run reuses
everything already computed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shaver.report.harness import BenchConfig, BenchOutcome, format_table, run_bench
from shaver.report.schema import ReportError, ResultRow

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
    compact: dict[str, Any] | None = None  # int8 values + int8 head: bytes, test AUC / LogLoss

    @property
    def report_html(self) -> Path | None:
        return self.bench.report_html

    def table(self) -> str:
        dense = next((r for r in self.bench.rows if r.method == "base"), None)
        lines = [format_table(self.bench.rows), ""]
        note = "" if dense is None or dense.artifact_bytes is None else (
            f" ({self.artifact_bytes / dense.artifact_bytes:.1%} of the dense model's "
            f"{dense.artifact_bytes / 1024:.1f} KiB)")
        lines.append(f"artifact at sparsity {EXPORT_SPARSITY:g}: {self.artifact_bytes / 1024:.1f} "
                     f"KiB{note}; numpy runtime vs torch: max |diff| = "
                     f"{self.runtime_max_abs_diff:.2e}")
        if self.compact is not None and dense is not None and dense.artifact_bytes:
            c = self.compact
            lines.append(f"the same cut with int8 values and an int8 head: {c['bytes'] / 1024:.1f} "
                         f"KiB ({c['bytes'] / dense.artifact_bytes:.1%} of the dense model), "
                         f"test AUC {c['auc']:.4f} / LogLoss {c['logloss']:.4f} by the numpy "
                         f"runtime")
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
        from shaver.report.stages import open_bench_data

        _, data = open_bench_data(data=None, dataset=dataset, rows=rows, workdir=out / "data",
                                  quiet=quiet)
        attribution_samples = demo_samples(data.num_fields)
    config = demo_config(dataset, rows, seed, attribution_samples)
    bench = run_bench(config, out, quiet=quiet)
    artifact, size, diff, compact = export_and_check(out, bench.rows, seed)
    return DemoOutcome(bench, artifact, size, diff, time.perf_counter() - started, compact)


def export_and_check(out: Path, rows: list[ResultRow], seed: int
                     ) -> tuple[Path, int, float, dict[str, Any]]:
    """Export the Shaver model at :data:`EXPORT_SPARSITY` and compare the numpy runtime's
    predictions with the pruned torch model's on test rows; export the same cut with int8
    values and an int8 head and score it on the test split with the runtime.
    (path, bytes, max |diff|, {"path", "bytes", "auc", "logloss"} of the compact one)."""
    from shaver.attribution.result import Attribution
    from shaver.data.feature_map import feature_map_of
    from shaver.deploy.artifact import export_artifact
    from shaver.pruning.api import prune
    from shaver.runtime import load_artifact
    from shaver.train.checkpoint import load_run, open_run_dataset
    from shaver.train.loop import predict_proba
    from shaver.train.metrics import auc_logloss

    run = load_run(out / "runs" / f"deepfm-s{seed}", device="cpu")
    dataset = open_run_dataset(run)
    attribution = Attribution.load(out / "attributions" / f"deepfm-s{seed}-codebook.safetensors")
    (result,) = prune(run.model, attribution, [EXPORT_SPARSITY], dataset=dataset, evaluate=False,
                      method="shaver")  # the bench row it is checked against
    label = result.budget.label
    measured = _measured(rows, label)
    path = out / f"deepfm-s{seed}-{label.replace('=', '')}.shaver"
    metadata: dict[str, Any] = {"budget": result.budget.to_json(), "scorer": "shapley",
                                "placeholder": "codebook", "kept": result.kept,
                                "total": result.total, "metrics": measured}
    feature_map = feature_map_of(str(dataset.path))
    if feature_map is not None:
        metadata["feature_map"] = feature_map
    exported = export_artifact(result.model, path, metadata=metadata)
    x_test, y_test = dataset.arrays("test")
    x = x_test[:RUNTIME_CHECK_ROWS]
    runtime_p = load_artifact(path).predict(x)
    torch_p = predict_proba(result.model, x, device="cpu")
    diff = float(np.max(np.abs(np.asarray(runtime_p, np.float64) - np.asarray(torch_p))))
    log.info("exported %s (%d bytes); runtime vs torch max |diff| %.2e", path, exported.bytes,
             diff)
    compact = path.with_name(path.stem + "-int8.shaver")
    small = export_artifact(result.model, compact, metadata=metadata, value_dtype="int8",
                            head_dtype="int8")
    auc, ll = auc_logloss(np.asarray(y_test), np.asarray(load_artifact(compact).predict(x_test)))
    return path, exported.bytes, diff, {"path": str(compact), "bytes": small.bytes,
                                        "auc": auc, "logloss": ll}


def _measured(rows: list[ResultRow], label: str) -> dict[str, float]:
    match = [r for r in rows if r.method == "shaver" and r.budget == label]
    if not match:
        raise ReportError(f"the demo grid has no shaver result at {label}")
    return {"auc": match[0].auc, "logloss": match[0].logloss}
