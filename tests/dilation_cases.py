"""The dilation edge cases, as a table. Each case is a small PyTorch module and its input shape.

Peers have shipped wrong results on exactly these: stride != dilation, padding with dilation, asymmetric rates,
1-D dilation, depthwise/grouped with dilation, rates larger than the feature map, 'same' padding (odd and even
kernels), transposed convs beside dilated ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], nn.Module]
    shape: tuple[int, ...]


class Seq(nn.Sequential):
    pass


class CausalConv1d(nn.Module):
    """WaveNet-style causal dilated conv: pad on the left only."""

    def __init__(self, channels, kernel, dilation):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation)

    def forward(self, x):
        return self.conv(F.pad(x, (self.pad, 0)))


class Parallel(nn.Module):
    """ASPP-like: several rates over one input, concatenated."""

    def __init__(self, channels, rates, size):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(channels, 4, 3, padding=r, dilation=r) for r in rates)
        self.size = size

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=1)


def conv(cin, cout, k, **kw):
    return lambda: nn.Conv2d(cin, cout, k, **kw)


CASES = [
    Case("rate2_same", conv(8, 8, 3, padding=2, dilation=2), (1, 8, 17, 17)),
    Case("rate2_no_padding", conv(8, 8, 3, padding=0, dilation=2), (1, 8, 17, 17)),
    Case("rate3_extra_padding", conv(8, 8, 3, padding=5, dilation=3), (1, 8, 15, 15)),
    Case("stride2_rate3", conv(8, 8, 3, stride=2, padding=3, dilation=3), (1, 8, 19, 19)),
    Case("stride3_rate2", conv(8, 8, 3, stride=3, padding=2, dilation=2), (1, 8, 20, 20)),
    Case("asymmetric_rates_2_4", conv(8, 8, 3, padding=(2, 4), dilation=(2, 4)), (1, 8, 16, 16)),
    Case("asymmetric_padding_rates", conv(8, 8, 3, padding=(1, 6), dilation=(1, 6)), (1, 8, 13, 21)),
    Case("kernel_1x3_rate_1x6", conv(8, 8, (1, 3), padding=(0, 6), dilation=(1, 6)), (1, 8, 9, 25)),
    Case("kernel_5x5_rate2", conv(4, 6, 5, padding=4, dilation=2), (1, 4, 14, 14)),
    Case("depthwise_rate2", conv(8, 8, 3, padding=2, dilation=2, groups=8), (1, 8, 17, 17)),
    Case("depthwise_stride2_rate4", conv(8, 16, 3, stride=2, padding=4, dilation=4, groups=8), (1, 8, 21, 21)),
    Case("grouped_rate3", conv(8, 12, 3, padding=3, dilation=3, groups=4), (1, 8, 15, 15)),
    Case("rate_larger_than_map", conv(8, 8, 3, padding=36, dilation=36), (1, 8, 9, 9)),
    Case("rate_larger_than_map_no_pad", conv(8, 8, 3, padding=24, dilation=24), (1, 8, 17, 17)),
    Case("rate_partially_out", conv(8, 8, 3, padding=12, dilation=12), (1, 8, 17, 17)),
    Case("same_padding_odd_kernel", conv(8, 8, 3, padding="same", dilation=3), (1, 8, 14, 14)),
    Case("same_padding_even_kernel", conv(8, 8, 4, padding="same", dilation=2), (1, 8, 14, 14)),
    Case("no_bias_rate2", conv(8, 8, 3, padding=2, dilation=2, bias=False), (1, 8, 12, 12)),
    Case("batch2_rate2", conv(4, 4, 3, padding=2, dilation=2), (2, 4, 11, 11)),
    Case("conv1d_rate4", lambda: nn.Conv1d(8, 8, 3, padding=4, dilation=4), (1, 8, 50)),
    Case("conv1d_causal_rate8", lambda: CausalConv1d(8, 2, 8), (1, 8, 40)),
    Case("conv1d_stride2_rate3", lambda: nn.Conv1d(8, 8, 3, stride=2, padding=3, dilation=3), (1, 8, 41)),
    Case("transposed_then_dilated", lambda: Seq(nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1,
                                                                   output_padding=1),
                                                nn.Conv2d(8, 8, 3, padding=2, dilation=2)), (1, 8, 9, 9)),
    Case("dilated_then_transposed", lambda: Seq(nn.Conv2d(8, 8, 3, padding=3, dilation=3), nn.ReLU(),
                                                nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)), (1, 8, 9, 9)),
    Case("transposed_dilated", lambda: nn.ConvTranspose2d(8, 8, 3, stride=2, padding=2, dilation=2),
         (1, 8, 9, 9)),
    Case("aspp_rates_6_12_18", lambda: Parallel(8, (1, 6, 12, 18), 13), (1, 8, 13, 13)),
    Case("maxpool_dilated", lambda: nn.MaxPool2d(3, stride=1, padding=1, dilation=2), (1, 4, 12, 12)),
    Case("conv_bn_relu_rate2", lambda: Seq(nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False),
                                           nn.BatchNorm2d(8), nn.ReLU()), (1, 8, 15, 15)),
]


def build(case: Case, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    module = case.make().eval()
    for m in module.modules():  # non-trivial batch-norm statistics, so folding is really tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module
