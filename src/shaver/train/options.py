"""Training options from a YAML file (``--config``), merged with command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shaver.errors import ModelError, TrainingError

#: Options of :func:`shaver.train.loop.fit` a config file's ``train:`` section may set.
TRAIN_KEYS = ("epochs", "lr", "weight_decay", "batch_size", "patience", "lr_decay", "seed",
              "optimizer")


def read_config(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model options, train options)`` from a YAML file.

    The file holds ``model:`` (``name`` plus sizes, as in ``model.config()``) and optionally
    ``train:`` (any of :data:`TRAIN_KEYS`); a file without those sections is read as model
    options alone.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: invalid YAML ({exc})") from exc
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ModelError(f"{path}: expected a mapping of options, found {type(doc).__name__}")
    if "model" in doc or "train" in doc:
        extra = sorted(set(doc) - {"model", "train"})
        if extra:
            raise ModelError(f"{path}: unknown section(s) {', '.join(extra)}; "
                             "expected 'model' and 'train'")
        model, train = doc.get("model") or {}, doc.get("train") or {}
    else:
        model, train = doc, {}
    if not isinstance(model, dict) or not isinstance(train, dict):
        raise ModelError(f"{path}: 'model' and 'train' must be mappings")
    unknown = sorted(set(train) - set(TRAIN_KEYS))
    if unknown:
        raise TrainingError(f"{path}: unknown train option(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(TRAIN_KEYS)}")
    return dict(model), dict(train)
