"""Eval-mode MLPs as plain (weight, bias, relu) layers, batch norm folded into the linears.

A folded layer can also run in int8 (``FoldedMLP.to_int8``): weights quantised per output
channel, activations quantised per call, int8 GEMM with int32 accumulation (fbgemm / x86
quantized engine of torch; CPU only). It is an approximation, offered as the CPU's lower
precision (these CPUs have no native bf16); the caller measures its agreement with fp32.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class FoldedLinear:
    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor  # (out,)
    relu: bool = False
    packed: object = None  # int8 prepacked weight + bias (torch.ops.quantized), or None

    @property
    def weight_t(self) -> torch.Tensor:
        """(in, out) contiguous: row j is the first layer's response to input j."""
        if not hasattr(self, "_wt"):
            self._wt = self.weight.t().contiguous()
        return self._wt

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """h (rows, in) -> (rows, out), activation applied."""
        if self.packed is not None:
            h = torch.ops.quantized.linear_dynamic(h.float().contiguous(), self.packed, True)
        else:
            h = F.linear(h, self.weight, self.bias)
        return torch.relu_(h) if self.relu else h


def int8_available(device: torch.device) -> bool:
    """True where dynamic int8 linear layers run: a CPU device with fbgemm / x86 / onednn."""
    engines = set(torch.backends.quantized.supported_engines)
    return device.type == "cpu" and bool(engines & {"x86", "fbgemm", "onednn"}) and hasattr(
        torch.ops.quantized, "linear_dynamic")


def pack_int8(weight: torch.Tensor, bias: torch.Tensor) -> object:
    """Per-output-channel symmetric int8 weight, prepacked with its fp32 bias."""
    scale = (weight.abs().amax(1) / 127.0).clamp_min(1e-12).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized-tensor creation is flagged for a future move
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(weight.float().cpu(), scale, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(qweight, bias.float().cpu())


@dataclass
class FoldedMLP:
    layers: list[FoldedLinear]

    @property
    def out_features(self) -> int:
        return int(self.layers[-1].weight.shape[0])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (rows, in) -> output (rows, out), every layer."""
        for layer in self.layers:
            h = layer(h)
        return h

    def forward_from_first(self, z: torch.Tensor) -> torch.Tensor:
        """z: (rows, H1) pre-activation of the first layer -> output (rows, out).

        Overwrites ``z`` (activations are applied in place to save memory traffic).
        """
        h = torch.relu_(z) if self.layers[0].relu else z
        for layer in self.layers[1:]:
            h = layer(h)
        return h

    def to_int8(self) -> FoldedMLP:
        """A copy whose hidden layers after the first run in int8 (their inputs are ReLU
        outputs, which quantise well); the first layer (fed raw embeddings or cross outputs,
        or updated incrementally) and the output layer stay fp32.
        """
        layers = []
        for i, layer in enumerate(self.layers):
            wide = 0 < i and layer.weight.shape[0] > 1 and self.layers[i - 1].relu
            packed = pack_int8(layer.weight, layer.bias) if wide else None
            layers.append(FoldedLinear(layer.weight, layer.bias, layer.relu, packed))
        return FoldedMLP(layers)


@torch.no_grad()
def fold_mlp(mlp: nn.Module) -> FoldedMLP | None:
    """Fold an ``nn.Sequential`` of Linear / BatchNorm1d / ReLU / Dropout / Identity (eval mode).

    Returns None for anything else (another activation, batch norm before any linear, ...).
    """
    if not isinstance(mlp, nn.Sequential):
        return None
    layers: list[FoldedLinear] = []
    for module in mlp:
        if isinstance(module, nn.Linear):
            bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
            layers.append(FoldedLinear(module.weight.detach().float().clone(),
                                       bias.detach().float().clone().to(module.weight.device)))
        elif isinstance(module, nn.BatchNorm1d):
            if not layers or layers[-1].relu or module.running_var is None:
                return None
            scale = (module.weight if module.affine else 1.0) / torch.sqrt(
                module.running_var + module.eps)
            shift = module.bias if module.affine else 0.0
            last = layers[-1]
            last.weight = last.weight * scale.unsqueeze(1)
            last.bias = (last.bias - module.running_mean) * scale + shift
        elif isinstance(module, nn.ReLU):
            if not layers or layers[-1].relu:
                return None
            layers[-1].relu = True
        elif isinstance(module, (nn.Dropout, nn.Identity)):
            continue
        else:
            return None
    if not layers:
        return None
    return FoldedMLP([FoldedLinear(v.weight.detach().float().contiguous(),
                                   v.bias.detach().float().contiguous(), v.relu) for v in layers])
