"""What an attribution cost, in the unit a user decides in: training epochs of the same run.

The method's promise is single-shot: score once instead of retraining per budget. Whether
that pays is a comparison with training, so the cost is stated as the attribution's wall
seconds over the mean wall seconds of one training epoch of the same run (recorded by
``shaver train`` in config.json, ``metrics.history[].seconds``), beside seconds and passes
over the attribution data. Both timings come from the machine that ran each step: compare
them only when both ran on the same machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def history_epoch_seconds(history: Sequence[Any] | None) -> float | None:
    """Mean wall seconds of the epochs in a training history (``[{"seconds": s}, ...]``);
    None when none is recorded."""
    seconds = [float(h["seconds"]) for h in history or ()
               if isinstance(h, Mapping) and isinstance(h.get("seconds"), (int, float))
               and not isinstance(h.get("seconds"), bool) and h["seconds"] > 0]
    return sum(seconds) / len(seconds) if seconds else None


def run_epoch_seconds(config: Mapping[str, Any]) -> float | None:
    """Mean training-epoch seconds recorded in a run's config.json (None when absent)."""
    return history_epoch_seconds((config.get("metrics") or {}).get("history"))


def attribution_cost(seconds: float, passes: float | None,
                     epoch_seconds: float | None) -> dict[str, float | None]:
    """{"seconds", "passes", "epoch_seconds", "epochs"}: ``epochs`` = seconds / epoch_seconds
    (None without a recorded epoch)."""
    epochs = (float(seconds) / float(epoch_seconds)
              if epoch_seconds is not None and epoch_seconds > 0 else None)
    return {"seconds": float(seconds), "passes": None if passes is None else float(passes),
            "epoch_seconds": None if epoch_seconds is None else float(epoch_seconds),
            "epochs": epochs}


def describe_cost(cost: Mapping[str, Any]) -> str:
    """"12.3 s = 0.45 training epochs (one epoch 27.3 s), 0.64 passes" (or "no training
    epoch recorded")."""
    epochs = cost.get("epochs")
    if epochs is None or not math.isfinite(epochs):
        head = f"{cost['seconds']:.1f} s (no training epoch recorded)"
    else:
        head = (f"{cost['seconds']:.1f} s = {epochs:.2f} training epochs (one epoch "
                f"{cost['epoch_seconds']:.1f} s)")
    passes = cost.get("passes")
    return head if passes is None else f"{head}, {passes:.3g} passes"
