"""Deterministic, seeded initialisation (no pretrained weights can be downloaded).

* Convolutions (1-D, 2-D, transposed): He et al. 2015 normal init in "fan_out" mode, std = sqrt(2 / fan_out),
  with fan_out counted *per group* (out_channels / groups * kernel elements). For ordinary convolutions this is
  exactly ``kaiming_normal_(mode="fan_out")``; for depthwise convolutions PyTorch's fan_out would be
  ``channels * 9`` and shrink the signal by ~1/channels per MobileNet block, so the per-group fan is used.
  Conv biases ~ U(-0.1, 0.1), so that bias adds are exercised.
* Linear: N(0, 0.01), bias 0.
* BatchNorm: nominally weight 1, bias 0, running mean 0, running var 1, perturbed so that folding BN into the
  preceding convolution is exercised numerically: weight ~ U(0.5, 1.5), bias ~ N(0, 0.1),
  running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5). The BatchNorm closing a residual branch (marked by
  :func:`models.backbones.damp_residual`) has its weight scaled by ``RESIDUAL_GAMMA`` = 0.2: with eval-mode BN
  statistics that do not normalise, every residual block would otherwise grow the activations by ~1.7x
  (ResNet-50 outputs ~1e4, ResNet-101 ~1e7). This is the zero-gamma residual init of Goyal et al. 2017, kept
  non-zero so that the branches still count.

All draws come from one ``torch.Generator`` seeded with ``seed``, in module order, so the result depends only on
the architecture and the seed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
RESIDUAL_GAMMA = 0.2


def conv_fan_out(conv: nn.modules.conv._ConvNd) -> int:
    """Output connections of one input element within its group: out_channels / groups * kernel elements."""
    return conv.out_channels // conv.groups * math.prod(conv.kernel_size)


@torch.no_grad()
def initialise(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, CONVS):
            m.weight.normal_(0.0, math.sqrt(2.0 / conv_fan_out(m)), generator=gen)
            if m.bias is not None:
                m.bias.uniform_(-0.1, 0.1, generator=gen)
        elif isinstance(m, NORMS):
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0.0, 0.1, generator=gen)
            m.running_mean.normal_(0.0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)
            if getattr(m, "residual_end", False):
                m.weight.mul_(RESIDUAL_GAMMA)
        elif isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 0.01, generator=gen)
            if m.bias is not None:
                m.bias.zero_()
    return module
