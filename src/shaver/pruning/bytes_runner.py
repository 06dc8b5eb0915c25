"""``shaver prune`` with byte budgets searched over sparsity x bits x tiers (``--precision
auto``): one pruned directory and one results row per budget (see ``bytes_search``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from shaver.data.store import PreparedDataset
from shaver.pruning.bytes_search import plan_for_bytes
from shaver.pruning.io import save_pruned
from shaver.table.families import Shape

PRECISIONS = ("auto", "fp32")


def searched_rows(model: nn.Module, scores: Any, budgets: Sequence[tuple[str, str]],
                  dataset: PreparedDataset, out_dir: Path, prefix: str, *,
                  shapes: Sequence[Shape] | None = None, order: str = "abs",
                  codebook: str = "fixed", device: str | None = None,
                  quiet: bool = True) -> list[dict[str, Any]]:
    """``budgets``: (axis "table" | "artifact", size text) pairs; returns results rows."""
    from shaver.pruning.api import _fingerprint
    from shaver.table.size import feature_map_metadata

    metadata = feature_map_metadata(dataset)
    base_fp = _fingerprint(model)
    rows = []
    for axis, text in budgets:
        chosen, record = plan_for_bytes(model, scores, text, dataset, axis=axis, shapes=shapes,
                                        order=order, metadata=metadata, device=device,
                                        codebook=codebook, quiet=quiet)
        label = record["budget"]["label"]
        info = {"budget": record["budget"], "scorer": record["scorer"], "order": order,
                "codebook": codebook, "placeholder": record["placeholder"],
                "model_fingerprint": base_fp, "finetuned": False,
                "dataset": {"path": str(dataset.path), "fingerprint": dataset.fingerprint},
                "metrics": record["metrics"], "artifact_bytes": record["artifact_bytes"],
                "table_bytes": record["table_bytes"], "plan": record["plan"],
                "val_metrics": record["val"],
                "candidates": [{k: c[k] for k in ("plan", "kept", "table_bytes", "val")}
                               for c in record["candidates"]]}
        path = save_pruned(out_dir / f"{prefix}-{label.replace('=', '-')}", chosen, info)
        total = record["total"]
        rows.append({"budget": label, "kept": record["kept"], "total": total,
                     "sparsity": 1 - record["kept"] / total, "bytes": record["artifact_bytes"],
                     "table_bytes": record["table_bytes"], "plan": record["plan"],
                     "auc": record["metrics"]["auc"], "logloss": record["metrics"]["logloss"],
                     "seconds": None, "scorer": record["scorer"],
                     "placeholder": record["placeholder"], "order": order,
                     "codebook": codebook, "finetuned": False, "path": str(path)})
    return rows
