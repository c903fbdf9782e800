"""Atrous FCN: DeepLab-LargeFOV (Chen et al. 2015, "Semantic Image Segmentation with Deep Convolutional Nets and
Fully Connected CRFs", sections 3.1 and 4.1, Table 2).

VGG-16 made fully convolutional at output stride 8: pool4 and pool5 run at stride 1 and conv5 is dilated by 2
(section 3.1). The fully connected fc6 becomes a 3x3 convolution with input stride (dilation) 12 and 1024 filters
("DeepLab-LargeFOV"), fc7 a 1x1 convolution with 1024 filters, fc8 the 1x1 classifier. Logits are upsampled
bilinearly to the input size (the paper's bilinear interpolation, section 3.1). The fully connected CRF is a
post-processing step and is not part of the network; dropout is omitted in inference.
"""

from __future__ import annotations

from torch import nn

from atrous.models.backbones import VGG16, resize, static_hw
from atrous.models.registry import ModelPreset, ZooModel, register


class AtrousFCN(nn.Module):
    def __init__(self, num_classes=21, widths=(64, 128, 256, 512, 512), fc_channels=1024, fc6_dilation=12):
        super().__init__()
        self.backbone = VGG16(widths, pool5=True, conv5_dilation=2)
        cin = self.backbone.out_channels
        self.fc6 = nn.Sequential(nn.Conv2d(cin, fc_channels, 3, padding=fc6_dilation, dilation=fc6_dilation),
                                 nn.ReLU())
        self.fc7 = nn.Sequential(nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU())
        self.fc8 = nn.Conv2d(fc_channels, num_classes, 1)

    def forward(self, image):
        return resize(self.fc8(self.fc7(self.fc6(self.backbone(image)))), static_hw(image))


register(ZooModel(
    name="fcn-atrous",
    summary="Atrous VGG-16 FCN, DeepLab-LargeFOV: dilated conv5, fc6 3x3 rate 12 (Chen et al. 2015)",
    factory=AtrousFCN,
    presets={
        "standard": ModelPreset({}, {"image": (1, 3, 257, 257)}, ("logits",)),
        # 129x129 -> 17x17 features, so the rate-12 fc6 still reaches real neighbours
        "tiny": ModelPreset(dict(widths=(8, 16, 32, 32, 32), fc_channels=64), {"image": (1, 3, 129, 129)},
                            ("logits",)),
    },
))
