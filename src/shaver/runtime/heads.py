"""Numpy forward passes of the registry's model heads (lr, fm, deepfm, dcn-v2, dcn-mix).

Each head is built once from the artifact's head tensors (eval BatchNorm folded into the
preceding Linear) and the model's field layout, then called as ``head(emb (batch, slots, d),
x (batch, slots), w (batch, slots) or None) -> logits (batch,)``. Like the torch models, a
head pools each bag (multi-valued field) with :meth:`shaver.layout.FieldLayout.coefficients`
and :meth:`~shaver.layout.FieldLayout.pool` first (first-order weights with the same
coefficients); without bags a slot is a field and nothing is pooled. They mirror
shaver.models.* in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from shaver.errors import ArtifactError
from shaver.layout import FieldLayout

#: ``head(emb (batch, slots, d), x (batch, slots), w (batch, slots) or None) -> (batch,)``.
Head = Callable[..., np.ndarray]
#: ``body(pooled emb (batch, fields, d), x (batch, slots), coef (batch, slots) or None)``.
Body = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]
#: What numpy and Python raise on tensors or configs that do not fit together.
MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError)
BN_EPS = 1e-5


def _get(params: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in params:
        raise ArtifactError(f"artifact head lacks tensor {name!r}")
    return params[name].astype(np.float32)


def _mlp_layers(params: Mapping[str, np.ndarray], prefix: str,
                hidden: int) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(W^T, b, relu) per Linear of an MLP ``prefix``, with BatchNorm folded in."""
    indices = sorted({int(k[len(prefix):].split(".")[0]) for k in params if k.startswith(prefix)})
    layers: list[list[Any]] = []
    for i in indices:
        p = f"{prefix}{i}."
        if f"{p}running_mean" in params:
            if not layers:
                raise ArtifactError(f"{p[:-1]}: BatchNorm before any Linear")
            scale = _get(params, f"{p}weight") / np.sqrt(_get(params, f"{p}running_var") + BN_EPS)
            w, b = layers[-1][0], layers[-1][1]
            layers[-1][0] = w * scale[None, :]
            layers[-1][1] = (b - _get(params, f"{p}running_mean")) * scale + _get(params, f"{p}bias")
        elif f"{p}weight" in params:
            layers.append([_get(params, f"{p}weight").T.copy(), _get(params, f"{p}bias"), False])
    if len(layers) < hidden:
        raise ArtifactError(f"{prefix[:-1]}: {len(layers)} Linear layers, expected >= {hidden}")
    for layer in layers[:hidden]:
        layer[2] = True
    return [(np.ascontiguousarray(w), b, relu) for w, b, relu in layers]


def _run_mlp(layers: list[tuple[np.ndarray, np.ndarray, bool]], h: np.ndarray) -> np.ndarray:
    for w, b, relu in layers:
        h = h @ w + b
        if relu:
            np.maximum(h, 0, out=h)
    return h


def _first_order(first: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]) -> Body:
    """Sum of the first-order weights of a sample's ids (each slot's weight times its pooling
    coefficient when the model has bags; a pad's is 0), plus the bias."""
    table = _get(first, "linear.weight.weight")[:, 0]
    bias = _get(params, "linear.bias")

    def linear(emb: np.ndarray, x: np.ndarray, coef: np.ndarray | None) -> np.ndarray:
        if coef is None:
            return table[x].sum(axis=1) + bias
        values = np.where(x >= 0, table[np.maximum(x, 0)], np.float32(0))
        return (values * coef).sum(axis=1, dtype=np.float32) + bias
    return linear


def _fm(emb: np.ndarray) -> np.ndarray:
    square_of_sum = emb.sum(axis=1) ** 2
    sum_of_square = (emb ** 2).sum(axis=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(axis=1)


def build_lr(cfg: Mapping[str, Any], params: Mapping[str, np.ndarray],
             first: Mapping[str, np.ndarray]) -> Body:
    bias = _get(params, "bias")
    return lambda emb, x, coef: emb.sum(axis=(1, 2)) + bias


def build_fm(cfg: Mapping[str, Any], params: Mapping[str, np.ndarray],
             first: Mapping[str, np.ndarray]) -> Body:
    linear = _first_order(first, params)
    return lambda emb, x, coef: linear(emb, x, coef) + _fm(emb)


def build_deepfm(cfg: Mapping[str, Any], params: Mapping[str, np.ndarray],
                 first: Mapping[str, np.ndarray]) -> Body:
    linear = _first_order(first, params)
    mlp = _mlp_layers(params, "mlp.", len(cfg["mlp_dims"]))

    def head(emb: np.ndarray, x: np.ndarray, coef: np.ndarray | None) -> np.ndarray:
        deep = _run_mlp(mlp, emb.reshape(emb.shape[0], -1))[:, 0]
        return linear(emb, x, coef) + _fm(emb) + deep
    return head


def _cross_v2(params: Mapping[str, np.ndarray], layers: int) -> Callable[[np.ndarray], np.ndarray]:
    ws = [(_get(params, f"cross.layers.{i}.weight").T.copy(), _get(params, f"cross.layers.{i}.bias"))
          for i in range(layers)]

    def cross(x0: np.ndarray) -> np.ndarray:
        x = x0
        for w, b in ws:
            x = x0 * (x @ w + b) + x
        return x
    return cross


def _cross_mix(params: Mapping[str, np.ndarray], layers: int,
               softmax: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    mats = [tuple(_get(params, f"cross.{k}.{i}") for k in ("v", "c", "u", "bias"))
            + (_get(params, f"cross.gates.{i}.weight").T.copy(),) for i in range(layers)]

    def cross(x0: np.ndarray) -> np.ndarray:
        x = x0
        for v, c, u, bias, gate_w in mats:
            low = np.tanh(np.matmul(x[None], v))                    # (experts, batch, rank)
            low = np.tanh(np.matmul(low, c))                        # (experts, batch, rank)
            up = np.matmul(low, u.transpose(0, 2, 1)) + bias        # (experts, batch, dim)
            logits = x @ gate_w                                     # (batch, experts)
            gate = logits  # gate "identity" (the Shaver authors' DCN-Mix)
            if softmax:  # gate "softmax" (DCN-V2, the default)
                gate = np.exp(logits - logits.max(axis=1, keepdims=True))
                gate /= gate.sum(axis=1, keepdims=True)
            x = (x0[None] * up * gate.T[:, :, None]).sum(axis=0) + x
        return x
    return cross


def _build_dcn(cfg: Mapping[str, Any], params: Mapping[str, np.ndarray], mix: bool) -> Body:
    layers = int(cfg["cross_layers"])
    softmax = cfg.get("gate", "softmax") == "softmax"
    cross = _cross_mix(params, layers, softmax) if mix else _cross_v2(params, layers)
    mlp = _mlp_layers(params, "mlp.", len(cfg["mlp_dims"]))
    out_w, out_b = _get(params, "out.weight").T.copy(), _get(params, "out.bias")
    stacked = cfg.get("structure", "stacked") == "stacked"

    def head(emb: np.ndarray, x: np.ndarray, coef: np.ndarray | None) -> np.ndarray:
        x0 = emb.reshape(emb.shape[0], -1)
        if stacked:
            h = _run_mlp(mlp, cross(x0))
        else:
            h = np.concatenate([cross(x0), _run_mlp(mlp, x0)], axis=1)
        return (h @ out_w + out_b)[:, 0]
    return head


HEADS: dict[str, Callable[..., Body]] = {
    "lr": build_lr,
    "fm": build_fm,
    "deepfm": build_deepfm,
    "dcn-v2": lambda cfg, params, first: _build_dcn(cfg, params, mix=False),
    "dcn-mix": lambda cfg, params, first: _build_dcn(cfg, params, mix=True),
}


def build_head(cfg: Mapping[str, Any], params: Mapping[str, np.ndarray],
               first: Mapping[str, np.ndarray], layout: FieldLayout | None = None) -> Head:
    """The numpy head for ``cfg["name"]`` and the fields' ``layout`` (None: one slot per
    field); :class:`ArtifactError` if unknown or incomplete."""
    name = cfg.get("name")
    if not isinstance(name, str) or name not in HEADS:
        raise ArtifactError(f"the numpy runtime has no head for model {name!r} "
                            f"(supported: {', '.join(HEADS)})")
    try:
        body = HEADS[name](cfg, params, first)
    except MALFORMED as exc:
        raise ArtifactError(f"model {name}: inconsistent head tensors or config ({exc})") from exc
    if layout is None or not layout.has_bags:
        return lambda emb, x, w=None: body(emb, x, None)

    def pooled(emb: np.ndarray, x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        coef = layout.coefficients(x, w)
        return body(layout.pool(emb, coef), x, coef)
    return pooled
