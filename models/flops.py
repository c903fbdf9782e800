"""FLOP and parameter counting.

FLOPs are 2 x multiply-accumulates of the convolution and linear layers, measured with forward hooks on one
forward pass (so they follow the actual feature-map sizes). Element-wise ops, pooling, normalisation and resizing
are not counted.

* Conv1d / Conv2d: MACs = output elements * in_channels / groups * kernel elements.
* ConvTranspose2d: every *input* element is multiplied into out_channels / groups * kernel elements, so
  MACs = input elements * out_channels / groups * kernel elements (counting output elements instead would also
  count the multiplications by the zeros a stride inserts).
* Linear: MACs = output elements * in_features.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def layer_macs(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(layer, nn.ConvTranspose2d):
        return inp.numel() * layer.out_channels // layer.groups * math.prod(layer.kernel_size)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        return out.numel() * layer.in_channels // layer.groups * math.prod(layer.kernel_size)
    if isinstance(layer, nn.Linear):
        return out.numel() * layer.in_features
    return 0


def count_flops(module: nn.Module, inputs: dict) -> int:
    """2 x MACs of one forward pass of ``module`` on ``inputs`` (name -> array or tensor, in forward() order).

    A module and inputs on the ``meta`` device give the count without computing anything."""
    total = 0

    def hook(layer, args, out):
        nonlocal total
        total += layer_macs(layer, args[0], out)

    kinds = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            module(*(torch.as_tensor(v) for v in inputs.values()))
    finally:
        for h in handles:
            h.remove()
    return 2 * total


def count_params(module: nn.Module) -> int:
    """Number of learnable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())
