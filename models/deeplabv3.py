"""DeepLabV3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation").

An atrous backbone at output stride 16 (or 8) followed by Atrous Spatial Pyramid Pooling (section 3.3): a 1x1
conv, three 3x3 atrous convs at rates (6, 12, 18) (doubled at output stride 8) and an image-level branch (global
average pooling -> 1x1 conv -> BN -> ReLU -> bilinear upsampling), every branch 256 filters with BN; the branches
are concatenated, fused by a 1x1 conv (256, BN, ReLU) and a 1x1 conv gives the logits, upsampled bilinearly to the
input size. Dropout (training only) is omitted since the zoo runs in inference mode.
"""

from __future__ import annotations

import torch
from torch import nn

from atrous.models.backbones import ConvBNAct, MobileNetV2, ResNet, resize, static_hw
from atrous.models.registry import ModelPreset, ZooModel, register

BASE_RATES = (6, 12, 18)  # at output stride 16 (section 3.3)


def aspp_rates(output_stride: int) -> tuple[int, ...]:
    """(6, 12, 18) at output stride 16, doubled to (12, 24, 36) at output stride 8."""
    if output_stride not in (8, 16):
        raise ValueError(f"ASPP is defined for output stride 8 or 16, not {output_stride}")
    return tuple(r * 16 // output_stride for r in BASE_RATES)


class ImagePooling(nn.Module):
    """Image-level features: global average pool -> 1x1 conv -> BN -> ReLU -> upsample to the feature size."""

    def __init__(self, cin, cout):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNAct(cin, cout, 1)

    def forward(self, x):
        return resize(self.conv(self.pool(x)), static_hw(x))


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling with image pooling (DeepLabV3 section 3.3, Fig. 5)."""

    def __init__(self, cin, channels=256, rates=BASE_RATES):
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList([ConvBNAct(cin, channels, 1)] +
                                      [ConvBNAct(cin, channels, 3, dilation=r) for r in self.rates])
        self.pooling = ImagePooling(cin, channels)
        self.project = ConvBNAct(channels * (len(self.rates) + 2), channels, 1)

    def forward(self, x):
        outs = [branch(x) for branch in self.branches] + [self.pooling(x)]
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3(nn.Module):
    """Backbone (returning ``(low, high)`` features) -> ASPP -> 1x1 classifier -> upsample to the input size."""

    def __init__(self, backbone: nn.Module, num_classes=21, output_stride=16, aspp_channels=256):
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.high_channels, aspp_channels, aspp_rates(output_stride))
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, image):
        _, high = self.backbone(image)
        return resize(self.classifier(self.aspp(high)), static_hw(image))


def deeplabv3_resnet(num_classes=21, output_stride=16, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512),
                     stem_width=64, multi_grid=(1, 2, 4), aspp_channels=256):
    backbone = ResNet(layers, "bottleneck", widths, stem_width, output_stride=output_stride, multi_grid=multi_grid)
    return DeepLabV3(backbone, num_classes, output_stride, aspp_channels)


def deeplabv3_mobilenet(num_classes=21, output_stride=16, width_mult=1.0, max_repeats=None, aspp_channels=256):
    backbone = MobileNetV2(width_mult, output_stride, max_repeats)
    return DeepLabV3(backbone, num_classes, output_stride, aspp_channels)


def _image(size):
    return {"image": (1, 3, size, size)}


register(ZooModel(
    name="deeplabv3-resnet",
    summary="DeepLabV3: ASPP + image pooling on a dilated ResNet-50, output stride 16 (Chen et al. 2017)",
    factory=deeplabv3_resnet,
    presets={
        "standard": ModelPreset({}, _image(257), ("logits",)),
        # reduced ResNet, same structure (bottlenecks, multi-grid, ASPP rates); 129x129 gives a 9x9 feature map
        # so the rate-6 branch still sees real neighbours
        "tiny": ModelPreset(dict(layers=(2, 2, 2, 3), widths=(8, 16, 24, 32), stem_width=16, aspp_channels=32),
                            _image(129), ("logits",)),
    },
))

register(ZooModel(
    name="deeplabv3-mobilenet",
    summary="DeepLabV3: ASPP + image pooling on a dilated MobileNetV2, output stride 16 (Sandler et al. 2018)",
    factory=deeplabv3_mobilenet,
    presets={
        "standard": ModelPreset({}, _image(257), ("logits",)),
        "tiny": ModelPreset(dict(width_mult=0.25, max_repeats=2, aspp_channels=32), _image(129), ("logits",)),
    },
))
