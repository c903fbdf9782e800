"""WaveNet (van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio"), sections 2.1-2.4, Fig. 4.

Input: one-hot mu-law encoded audio, (1, 256, T). A causal convolution (kernel 2) lifts it to the residual
channels; then stacks of residual layers, each a dilated causal conv1d (kernel 2) as filter and as gate,
z = tanh(W_f * x) * sigmoid(W_g * x) (gated activation, section 2.3), a 1x1 conv added back to the input
(residual) and a 1x1 conv to the skip channels (section 2.4). Dilations double up to 512 and repeat
(1, 2, ..., 512, 1, 2, ..., 512, ...). The summed skips go through ReLU -> 1x1 -> ReLU -> 1x1 to 256 logits over
the mu-law levels (the softmax is left to the caller). Causality is by left padding only (``F.pad``), so output
t depends on inputs t - receptive_field + 1 ... t.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atrous.models.registry import ModelPreset, ZooModel, register


class CausalConv1d(nn.Conv1d):
    """Conv1d that pads ``dilation * (kernel - 1)`` zeros on the left only."""

    def __init__(self, cin, cout, kernel=2, dilation=1):
        super().__init__(cin, cout, kernel, dilation=dilation)
        self.left = dilation * (kernel - 1)

    def forward(self, x):
        return super().forward(F.pad(x, (self.left, 0)))


class ResidualLayer(nn.Module):
    """Dilated causal filter and gate convs, gated tanh unit, 1x1 residual and 1x1 skip convs (Fig. 4)."""

    def __init__(self, residual, dilation_channels, skip, dilation, kernel=2):
        super().__init__()
        self.left = dilation * (kernel - 1)
        self.filter = nn.Conv1d(residual, dilation_channels, kernel, dilation=dilation)
        self.gate = nn.Conv1d(residual, dilation_channels, kernel, dilation=dilation)
        self.residual = nn.Conv1d(dilation_channels, residual, 1)
        self.skip = nn.Conv1d(dilation_channels, skip, 1)

    def forward(self, x):
        past = F.pad(x, (self.left, 0))  # causal: one left pad shared by the filter and the gate
        z = torch.tanh(self.filter(past)) * torch.sigmoid(self.gate(past))
        return x + self.residual(z), self.skip(z)


def doubling(top=512, repeats=1):
    """(1, 2, 4, ..., top) repeated ``repeats`` times."""
    return tuple(2 ** i for i in range(top.bit_length())) * repeats


class WaveNet(nn.Module):
    def __init__(self, quantization=256, residual_channels=32, dilation_channels=32, skip_channels=256,
                 dilations=doubling(512, 3), kernel=2):
        super().__init__()
        self.kernel, self.dilations = kernel, tuple(dilations)
        self.causal = CausalConv1d(quantization, residual_channels, kernel)
        self.layers = nn.ModuleList(ResidualLayer(residual_channels, dilation_channels, skip_channels, d, kernel)
                                    for d in self.dilations)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(skip_channels, skip_channels, 1), nn.ReLU(),
                                  nn.Conv1d(skip_channels, quantization, 1))

    @property
    def receptive_field(self) -> int:
        """Samples each output sees: the causal conv's (kernel - 1) plus every layer's dilation * (kernel - 1)."""
        return (self.kernel - 1) * (1 + sum(self.dilations)) + 1

    def forward(self, audio):
        x, skips = self.causal(audio), None
        for layer in self.layers:
            x, s = layer(x)
            skips = s if skips is None else skips + s
        return self.head(skips)


def mu_law_encode(wave: np.ndarray, mu: int = 255) -> np.ndarray:
    """Section 2.2: f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), quantised to the integers 0..mu."""
    companded = np.sign(wave) * np.log1p(mu * np.abs(np.clip(wave, -1, 1))) / np.log1p(mu)
    return np.clip(np.floor((companded + 1) / 2 * mu + 0.5), 0, mu).astype(np.int64)


def one_hot_audio(preset: ModelPreset, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A seeded waveform (three random tones + noise at 16 kHz), mu-law encoded and one-hot, (1, levels, T)."""
    (name, (batch, levels, length)), = preset.inputs.items()
    t = np.arange(length) / 16000.0
    freqs, amps, phases = rng.uniform(80, 2000, 3), rng.uniform(0.1, 0.3, 3), rng.uniform(0, 2 * np.pi, 3)
    wave = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    wave = wave + 0.02 * rng.standard_normal(length)
    codes = mu_law_encode(wave, levels - 1)
    one_hot = np.zeros((batch, levels, length), np.float32)
    one_hot[:, codes, np.arange(length)] = 1.0
    return {name: one_hot}


register(ZooModel(
    name="wavenet",
    summary="WaveNet: gated dilated causal conv1d stacks with residual and skip links (van den Oord et al. 2016)",
    factory=WaveNet,
    presets={
        # 1 s of 16 kHz audio, three stacks of dilations 1..512 (receptive field 3071 samples)
        "standard": ModelPreset({}, {"audio": (1, 256, 16000)}, ("logits",)),
        "tiny": ModelPreset(dict(residual_channels=16, dilation_channels=16, skip_channels=32,
                                 dilations=doubling(8, 1)), {"audio": (1, 256, 320)}, ("logits",)),
    },
    make_inputs=one_hot_audio,
))
