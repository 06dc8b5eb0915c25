"""Training options from a YAML file (``--config``), merged with command-line flags."""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import yaml

from shaver.errors import ModelError, TrainingError, shown
from shaver.fileio import load_yaml
from shaver.train.optim import OPTIMIZERS

#: Options of :func:`shaver.train.loop.fit` a config file's ``train:`` section may set.
TRAIN_KEYS = ("epochs", "lr", "weight_decay", "batch_size", "patience", "lr_decay", "seed",
              "optimizer")

#: What each option of :func:`shaver.train.loop.fit` accepts: (kind, lowest, above,
#: highest-below, may be None). ``patience`` None: never stop early.
_RULES: dict[str, tuple[str, float | None, bool, float | None, bool]] = {
    "epochs": ("int", 1, False, None, False), "batch_size": ("int", 2, False, None, False),
    "patience": ("int", 1, False, None, True), "seed": ("int", 0, False, None, False),
    "lr": ("number", 0, True, None, False), "weight_decay": ("number", 0, False, None, False),
    "lr_decay": ("number", 0, True, 1, True),
}


def option_problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` as the training option ``key`` (None when it is fine)."""
    if key == "optimizer":
        return None if value in OPTIMIZERS else \
            f"expected one of {', '.join(OPTIMIZERS)}, got {shown(value)}"
    kind, low, strict, high, nullable = _RULES[key]
    if value is None and nullable:
        return None
    wanted = "an integer" if kind == "int" else "a number"
    wanted += f" {'>' if strict else '>='} {low:g}" if high is None else f" in ({low:g}, {high:g})"
    wanted += " (or null)" if nullable else ""
    numeric = isinstance(value, numbers.Integral if kind == "int" else numbers.Real)
    if isinstance(value, bool) or not numeric or not math.isfinite(value) or value < low \
            or (strict and value == low) or (high is not None and value >= high):
        return f"expected {wanted}, got {shown(value)}"
    return None


def check_options(settings: dict[str, Any], name_of: Any = str) -> None:
    """Raise :class:`TrainingError` ``"<name_of(key)>: expected ..., got ..."`` for the first
    bad option of ``settings`` (``name_of`` says where each came from: a flag, a file)."""
    for key in TRAIN_KEYS:
        if key in settings:
            problem = option_problem(key, settings[key])
            if problem:
                raise TrainingError(f"{name_of(key)}: {problem}")


def read_config(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model options, train options)`` from a YAML file.

    The file holds ``model:`` (``name`` plus sizes, as in ``model.config()``) and optionally
    ``train:`` (any of :data:`TRAIN_KEYS`); a file without those sections is read as model
    options alone.
    """
    path = Path(path)
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"), path, ModelError)
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: config file not found") from exc
    except IsADirectoryError as exc:
        raise ModelError(f"{path}: is a directory, expected a YAML config file") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path}: not UTF-8 text (offset {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ModelError(f"{path}{line}: invalid YAML "
                         f"({' '.join(str(getattr(exc, 'problem', None) or exc).split())})") \
            from exc
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
        raise TrainingError(f"{path}: unknown train option(s) "
                            f"{shown(', '.join(map(str, unknown)))}; "
                            f"accepted: {', '.join(TRAIN_KEYS)}")
    train = dict(train)
    if train.get("patience") == 0:  # as --patience 0: never stop early
        train["patience"] = None
    check_options(train, lambda key: f"{path}: train.{key}")
    return dict(model), train
