"""LinkNet (Chaurasia & Culurciello 2017, "LinkNet: Exploiting Encoder Representations for Efficient Semantic
Segmentation"), section 2 and Figs. 1-3, Table 1.

* Initial block: 7x7/2 conv (64) + BN + ReLU, 3x3/2 max pool.
* Encoder: four ResNet-18 blocks (two basic residual units each) with 64, 128, 256, 512 channels. Fig. 2 draws
  every encoder block with a stride-2 first conv, but the authors' project page states that "the first encoder
  block does not perform strided convolution" and that the encoder is exactly ResNet-18; that is what is built
  (strides 1, 2, 2, 2), so the encoder reaches stride 32 and inputs must be divisible by 32.
* Decoder block (Fig. 3): 1x1 conv m -> m/4, 3x3 full (transposed) conv, 1x1 conv m/4 -> n, each with BN + ReLU.
  Decoder widths (Table 1): (512->256), (256->128), (128->64), (64->64). Each decoder block undoes its encoder
  block's stride: x2 (output_padding 1 so the size exactly doubles) for blocks 2-4, stride 1 for block 1 (whose
  encoder block does not downsample), so that the final block's two x2 full convs land on the input size.
* Links: "the input of each encoder layer is bypassed to the output of its corresponding decoder", i.e.
  decoder_i(...) + input of encoder_i (= output of encoder_{i-1}, or of the initial block for i = 1).
* Final block: 3x3 full conv /2 64 -> 32 (BN, ReLU), 3x3 conv 32 -> 32 (BN, ReLU), 2x2 full conv /2 32 -> classes.
"""

from __future__ import annotations

from torch import nn

from atrous.models.backbones import ResNet
from atrous.models.registry import ModelPreset, ZooModel, register


class UpConvBNReLU(nn.Sequential):
    """Transposed conv that multiplies the size by ``stride`` exactly, + BN + ReLU."""

    def __init__(self, cin, cout, kernel=3, stride=2):
        padding = (kernel - 1) // 2
        extra = stride - kernel + 2 * padding  # out = (in - 1) * stride - 2 * padding + kernel + extra
        super().__init__(nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding=extra, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


def conv_bn_relu(cin, cout, kernel):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class DecoderBlock(nn.Sequential):
    """1x1 m -> m/4, 3x3 full conv (x stride), 1x1 m/4 -> n (Fig. 3)."""

    def __init__(self, m, n, stride=2):
        super().__init__(conv_bn_relu(m, m // 4, 1), UpConvBNReLU(m // 4, m // 4, 3, stride),
                         conv_bn_relu(m // 4, n, 1))


class LinkNet(nn.Module):
    def __init__(self, num_classes=21, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), encoder_strides=(1, 2, 2, 2),
                 final_channels=32):
        super().__init__()
        self.encoder = ResNet(blocks, "basic", widths, stem_width=widths[0], strides=encoder_strides)
        chans = self.encoder.channels  # [initial block, encoder 1..4]
        self.decoders = nn.ModuleList(DecoderBlock(chans[i + 1], chans[i], encoder_strides[i])
                                      for i in range(len(widths)))
        self.final = nn.Sequential(UpConvBNReLU(chans[0], final_channels, 3, 2),
                                   conv_bn_relu(final_channels, final_channels, 3),
                                   nn.ConvTranspose2d(final_channels, num_classes, 2, 2))
        self.stride = 4 * 2 ** sum(s == 2 for s in encoder_strides)

    def forward(self, image):
        if image.shape[-1] % self.stride or image.shape[-2] % self.stride:
            raise ValueError(f"LinkNet needs input sizes divisible by {self.stride}, got {tuple(image.shape)}")
        feats = self.encoder.features(image)
        x = feats[-1]
        for i in reversed(range(len(self.decoders))):
            x = self.decoders[i](x) + feats[i]  # decoder_i output + input of encoder_i
        return self.final(x)


register(ZooModel(
    name="linknet",
    summary="LinkNet: ResNet-18 encoder, transposed-conv decoder with encoder-decoder links (Chaurasia 2017)",
    factory=LinkNet,
    presets={
        "standard": ModelPreset({}, {"image": (1, 3, 256, 256)}, ("logits",)),
        "tiny": ModelPreset(dict(widths=(16, 16, 32, 64), final_channels=8), {"image": (1, 3, 64, 64)},
                            ("logits",)),
    },
))
