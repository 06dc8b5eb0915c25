"""Eval-mode MLPs as plain (weight, bias, relu) layers, batch norm folded into the linears."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class FoldedLinear:
    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor  # (out,)
    relu: bool = False

    @property
    def weight_t(self) -> torch.Tensor:
        """(in, out) contiguous: row j is the first layer's response to input j."""
        if not hasattr(self, "_wt"):
            self._wt = self.weight.t().contiguous()
        return self._wt


@dataclass
class FoldedMLP:
    layers: list[FoldedLinear]

    @property
    def out_features(self) -> int:
        return int(self.layers[-1].weight.shape[0])

    def forward_from_first(self, z: torch.Tensor) -> torch.Tensor:
        """z: (rows, H1) pre-activation of the first layer -> output (rows, out).

        Overwrites ``z`` (activations are applied in place to save memory traffic).
        """
        h = torch.relu_(z) if self.layers[0].relu else z
        for layer in self.layers[1:]:
            h = F.linear(h, layer.weight, layer.bias)
            if layer.relu:
                h = torch.relu_(h)
        return h


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
