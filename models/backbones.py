"""Shared building blocks: layers, ResNet, MobileNetV2 and VGG-16, all able to trade stride for dilation.

Atrous backbones follow Chen et al. 2017 ("Rethinking Atrous Convolution", DeepLabV3) section 3.1: once the
feature map reaches the wanted ``output_stride``, every later stride-2 stage runs at stride 1 and its convolutions
are dilated by the stride that was removed, so the receptive field grows as if the stride had been kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------------------- layers

def static_hw(x: torch.Tensor) -> tuple[int, int]:
    """The static spatial size of an NCHW tensor as plain ints (recorded as constants when exported)."""
    return int(x.shape[-2]), int(x.shape[-1])


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The zoo's only resize: bilinear, align_corners=False, to an explicit integer size."""
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation ("relu", "relu6" or None). Padding keeps 'same' size."""

    def __init__(self, cin, cout, kernel=1, stride=1, dilation=1, groups=1, act="relu"):
        padding = dilation * (kernel - 1) // 2
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=False), nn.BatchNorm2d(cout)]
        if act == "relu":
            layers.append(nn.ReLU())
        elif act == "relu6":
            layers.append(nn.ReLU6())
        elif act is not None:
            raise ValueError(f"unknown activation {act!r}")
        super().__init__(*layers)


def damp_residual(conv_bn: ConvBNAct) -> ConvBNAct:
    """Mark the BatchNorm that closes a residual branch; :mod:`models.weights` starts its scale small (as Goyal et
    al. 2017 start it at zero), so that deep untrained residual stacks do not blow activations up."""
    conv_bn[1].residual_end = True
    return conv_bn


def atrous_schedule(strides, output_stride, current=1):
    """(stride, dilation-before, dilation-after) per stage: strides beyond ``output_stride`` become dilation."""
    plan, dilation = [], 1
    for s in strides:
        if output_stride and current * s > output_stride:
            plan.append((1, dilation, dilation * s))
            dilation *= s
        else:
            plan.append((s, dilation, dilation))
            current *= s
    return plan


# ---------------------------------------------------------------------------------------------------------- ResNet

class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; He et al. 2016, ResNet-18/34."""

    expansion = 1

    def __init__(self, cin, width, stride=1, dilation=1):
        super().__init__()
        self.conv1 = ConvBNAct(cin, width, 3, stride, dilation)
        self.conv2 = damp_residual(ConvBNAct(width, width, 3, 1, dilation, act=None))
        self.shortcut = _shortcut(cin, width, stride)

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride, dilation) -> 1x1 expand x4, plus shortcut; He et al. 2016, ResNet-50/101."""

    expansion = 4

    def __init__(self, cin, width, stride=1, dilation=1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = ConvBNAct(cin, width, 1)
        self.conv2 = ConvBNAct(width, width, 3, stride, dilation)
        self.conv3 = damp_residual(ConvBNAct(width, cout, 1, act=None))
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x):
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


def _shortcut(cin, cout, stride):
    return nn.Identity() if stride == 1 and cin == cout else ConvBNAct(cin, cout, 1, stride, act=None)


class ResNet(nn.Module):
    """ResNet (He et al. 2016) without its classifier, optionally atrous (DeepLabV3 section 3.1).

    Stem: 7x7/2 conv + 3x3/2 max pool (stride 4), then four stages of ``layers[i]`` blocks with widths ``widths``
    and strides ``strides``. With ``output_stride`` 16 or 8 the last one or two stages keep stride 1 and are
    dilated instead (first block of a dilated stage at the previous rate, the others at the new rate, like
    torchvision's ``replace_stride_with_dilation``). ``multi_grid`` (DeepLabV3 section 3.2, e.g. (1, 2, 4))
    sets the last stage's per-block rates to ``rate * multi_grid[i]``.

    ``forward`` returns ``(low, high)``: the stride-4 output of stage 1 and the last stage's output.
    """

    def __init__(self, layers=(3, 4, 6, 3), block="bottleneck", widths=(64, 128, 256, 512), stem_width=64,
                 strides=(1, 2, 2, 2), output_stride=None, multi_grid=None, in_channels=3):
        super().__init__()
        unit = {"bottleneck": Bottleneck, "basic": BasicBlock}[block]
        self.stem = nn.Sequential(ConvBNAct(in_channels, stem_width, 7, 2), nn.MaxPool2d(3, 2, 1))
        plan = atrous_schedule(strides, output_stride, current=4)
        self.stages, self.channels, cin = nn.ModuleList(), [stem_width], stem_width
        for i, (n, width, (stride, first_rate, rate)) in enumerate(zip(layers, widths, plan)):
            rates = [first_rate] + [rate] * (n - 1)
            if multi_grid and i == len(layers) - 1:
                rates = [rate * multi_grid[j % len(multi_grid)] for j in range(n)]
            blocks = []
            for j in range(n):
                blocks.append(unit(cin, width, stride if j == 0 else 1, rates[j]))
                cin = width * unit.expansion
            self.stages.append(nn.Sequential(*blocks))
            self.channels.append(cin)
        self.low_channels, self.high_channels = self.channels[1], self.channels[-1]

    def features(self, x):
        """[stem output (stride 4), stage 1, stage 2, stage 3, stage 4]."""
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats

    def forward(self, x):
        feats = self.features(x)
        return feats[1], feats[-1]


# ---------------------------------------------------------------------------------------------------- MobileNetV2

def make_divisible(value, divisor=8):
    """Round a width to a multiple of ``divisor`` without losing more than 10% (Sandler et al. 2018)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """Sandler et al. 2018 section 3.3: 1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> linear 1x1 projection,
    with a residual connection when the shape is kept. The depthwise conv carries the dilation."""

    def __init__(self, cin, cout, stride, expansion, dilation=1):
        super().__init__()
        hidden = cin * expansion
        layers = [ConvBNAct(cin, hidden, 1, act="relu6")] if expansion != 1 else []
        layers += [ConvBNAct(hidden, hidden, 3, stride, dilation, groups=hidden, act="relu6"),
                   ConvBNAct(hidden, cout, 1, act=None)]
        self.residual = stride == 1 and cin == cout
        if self.residual:
            damp_residual(layers[-1])
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 feature extractor (Sandler et al. 2018, Table 2), atrous at ``output_stride`` 16 or 8.

    As for DeepLabV3 in the paper's section 6.3, features are taken from the last inverted-residual stage
    (320 channels at width 1.0): the final 1x1 conv to 1280 channels is not built. ``max_repeats`` caps the
    blocks per stage (for small presets). ``forward`` returns ``(low, high)``: the stride-4 features
    (24 channels at width 1.0) and the last features.
    """

    # (expansion t, channels c, repeats n, stride s)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, width_mult=1.0, output_stride=16, max_repeats=None, in_channels=3):
        super().__init__()
        stem = make_divisible(32 * width_mult)
        self.stem = ConvBNAct(in_channels, stem, 3, 2, act="relu6")
        plan = atrous_schedule([s for *_, s in self.SETTINGS], output_stride, current=2)
        blocks, cin, stride_so_far, self.low_index = [], stem, 2, None
        for (t, c, n, _), (stride, first_rate, rate) in zip(self.SETTINGS, plan):
            cout, n = make_divisible(c * width_mult), min(n, max_repeats or n)
            if stride_so_far == 4 and stride == 2 and self.low_index is None:
                self.low_index = len(blocks) - 1  # last block at stride 4
            for j in range(n):
                blocks.append(InvertedResidual(cin, cout, stride if j == 0 else 1, t, first_rate if j == 0 else rate))
                cin = cout
            stride_so_far *= stride
        self.blocks = nn.Sequential(*blocks)
        self.low_channels = self.blocks[self.low_index].body[-1][0].out_channels
        self.high_channels = cin

    def forward(self, x):
        x, low = self.stem(x), None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.low_index:
                low = x
        return low, x


# ------------------------------------------------------------------------------------------------------------ VGG

class VGG16(nn.Module):
    """VGG-16 convolutions (Simonyan & Zisserman 2015, configuration D: blocks of 2, 2, 3, 3, 3 3x3 convs + ReLU,
    no BatchNorm) made atrous as in DeepLab (Chen et al. 2015, "Semantic Image Segmentation with Deep
    Convolutional Nets and Fully Connected CRFs", section 3.1): pool1-3 are 3x3/2 max pools (padding 1), pool4
    is a 3x3/1 max pool, conv5 is dilated by 2 and pool5 (if kept) is 3x3/1. Output stride 8.
    """

    def __init__(self, widths=(64, 128, 256, 512, 512), pool5=True, conv5_dilation=2, in_channels=3):
        super().__init__()
        layers, cin = [], in_channels
        for i, (n, width) in enumerate(zip((2, 2, 3, 3, 3), widths)):
            rate = conv5_dilation if i == 4 else 1
            for _ in range(n):
                layers += [nn.Conv2d(cin, width, 3, padding=rate, dilation=rate), nn.ReLU()]
                cin = width
            if i < 3:
                layers.append(nn.MaxPool2d(3, 2, 1))
            elif i == 3 or pool5:
                layers.append(nn.MaxPool2d(3, 1, 1))
        self.body = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x):
        return self.body(x)
