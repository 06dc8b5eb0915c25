"""Build any shaver model by name or from the ``config()`` dict of an existing one."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from shaver.errors import ModelError
from shaver.models.base import CTRModel
from shaver.models.dcn import DCNV2, DCNMix
from shaver.models.deepfm import DeepFM
from shaver.models.fm import FM
from shaver.models.lr import LogisticRegression

MODELS: dict[str, type[CTRModel]] = {
    cls.name: cls for cls in (LogisticRegression, FM, DeepFM, DCNV2, DCNMix)
}
#: Registry names, in order of complexity.
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def model_class(name: str) -> type[CTRModel]:
    """The model class registered as ``name``; :class:`ModelError` lists the known names."""
    key = str(name).strip().lower()
    if key not in MODELS:
        raise ModelError(f"unknown model {name!r}: known models are {', '.join(MODEL_NAMES)}")
    return MODELS[key]


def model_options(name: str) -> dict[str, Any]:
    """Constructor options of model ``name`` (besides ``field_dims``) with their defaults."""
    sig = inspect.signature(model_class(name).__init__)
    return {p: v.default for p, v in sig.parameters.items() if p not in ("self", "field_dims")}


def build_model(
    name_or_config: str | Mapping[str, Any],
    field_dims: Sequence[int] | Any | None = None,
    *,
    seed: int | None = None,
    **overrides: Any,
) -> CTRModel:
    """Build a model.

    ``name_or_config`` is a registry name (see :data:`MODEL_NAMES`) or a dict as returned by
    ``model.config()`` (``{"name": ..., "field_dims": ..., <sizes>}``). ``field_dims`` (rows
    per field, or a dataset: anything with ``field_dims`` and ``layout``, such as a
    :class:`~shaver.data.store.PreparedDataset`, whose list fields the model then pools) and
    ``overrides`` (e.g. ``embed_dim=8, mlp_dims=[64, 64]``) take precedence over the dict.
    Unknown options raise :class:`ModelError` naming the accepted ones. With ``seed`` the
    initial weights come from ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``
    (the caller's global random state is left as it was).
    """
    if isinstance(name_or_config, Mapping):
        config = dict(name_or_config)
        if "name" not in config:
            raise ModelError(f"model config lacks 'name' (one of {', '.join(MODEL_NAMES)})")
        name = config.pop("name")
    else:
        name, config = name_or_config, {}
    config.update(overrides)
    if field_dims is not None and hasattr(field_dims, "layout"):  # a dataset
        config["layout"] = field_dims.layout.to_json()
        field_dims = field_dims.field_dims
    if field_dims is not None:
        config["field_dims"] = list(field_dims)
    cls = model_class(name)
    if not config.get("field_dims"):
        raise ModelError(f"model {cls.name!r} needs field_dims (rows per field)")
    accepted = model_options(cls.name)
    unknown = sorted(set(config) - set(accepted) - {"field_dims"})
    if unknown:
        raise ModelError(
            f"model {cls.name!r} has no option {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    try:
        if seed is None:
            return cls(**config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return cls(**config)
    except TypeError as exc:
        raise ModelError(f"model {cls.name!r}: bad options {config} ({exc})") from exc
