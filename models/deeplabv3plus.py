"""DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation").

Encoder: DeepLabV3 (dilated ResNet at output stride 16 + ASPP with image pooling), whose 256-channel output is the
encoder feature (section 3.1). Decoder (section 3.1, Fig. 2): the stride-4 low-level features are reduced to 48
channels by a 1x1 conv (BN, ReLU), the encoder features are upsampled bilinearly x4 to that size and concatenated,
two 3x3 convs of 256 channels (BN, ReLU) refine them, a 1x1 conv gives the logits, upsampled x4 to the input size.
The paper's best encoder is a modified aligned Xception; here the encoder is the paper's ResNet variant.
"""

from __future__ import annotations

import torch
from torch import nn

from atrous.models.backbones import ConvBNAct, ResNet, resize, static_hw
from atrous.models.deeplabv3 import ASPP, aspp_rates
from atrous.models.registry import ModelPreset, ZooModel, register


class Decoder(nn.Module):
    """Low-level 1x1 reduction, x4 upsampling of the encoder output, concat, two 3x3 convs, 1x1 classifier."""

    def __init__(self, low_channels, encoder_channels=256, reduced=48, channels=256, num_classes=21):
        super().__init__()
        self.reduce = ConvBNAct(low_channels, reduced, 1)
        self.refine = nn.Sequential(ConvBNAct(encoder_channels + reduced, channels, 3),
                                    ConvBNAct(channels, channels, 3))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low, encoded):
        low = self.reduce(low)
        encoded = resize(encoded, static_hw(low))
        return self.classifier(self.refine(torch.cat([encoded, low], dim=1)))


class DeepLabV3Plus(nn.Module):
    def __init__(self, num_classes=21, output_stride=16, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512),
                 stem_width=64, multi_grid=(1, 2, 4), aspp_channels=256, low_reduced=48, decoder_channels=256):
        super().__init__()
        self.backbone = ResNet(layers, "bottleneck", widths, stem_width, output_stride=output_stride,
                               multi_grid=multi_grid)
        self.aspp = ASPP(self.backbone.high_channels, aspp_channels, aspp_rates(output_stride))
        self.decoder = Decoder(self.backbone.low_channels, aspp_channels, low_reduced, decoder_channels,
                               num_classes)

    def forward(self, image):
        low, high = self.backbone(image)
        return resize(self.decoder(low, self.aspp(high)), static_hw(image))


register(ZooModel(
    name="deeplabv3plus",
    summary="DeepLabV3+: DeepLabV3 encoder (dilated ResNet-50, OS 16) + stride-4 decoder (Chen et al. 2018)",
    factory=DeepLabV3Plus,
    presets={
        "standard": ModelPreset({}, {"image": (1, 3, 257, 257)}, ("logits",)),
        "tiny": ModelPreset(dict(layers=(2, 2, 2, 3), widths=(8, 16, 24, 32), stem_width=16, aspp_channels=32,
                                 low_reduced=8, decoder_channels=32),
                            {"image": (1, 3, 129, 129)}, ("logits",)),
    },
))
