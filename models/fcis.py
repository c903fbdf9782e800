"""FCIS (Li et al. 2017, "Fully Convolutional Instance-aware Semantic Segmentation"), sections 3.2-3.3, Fig. 3.

Network (the compiled graph): ResNet-101 whose conv5 runs at stride 1 with dilation 2 (feature stride 16), a 1x1
conv reducing conv5 to 1024 channels (ReLU), and a 1x1 conv producing the 2 k^2 (C+1) position-sensitive
inside/outside score maps, output ``ps_score_maps`` of shape (1, 2 k^2 (C+1), H/16, W/16). Channel layout:
``((c * 2 + s) * k + i) * k + j`` for category c, s = 0 inside / 1 outside, cell (row i, column j).

Not in the graph: the region proposal network and the 4 k^2 box-regression maps (a separate detection head whose
boxes are an input to assembling), and the RoI assembling itself, which depends on the boxes and is done as
post-processing by :func:`assemble_rois` on the compiled model's output.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from atrous.models.backbones import ResNet
from atrous.models.instancefcn import cell_index
from atrous.models.registry import ModelPreset, ZooModel, register


class FCIS(nn.Module):
    def __init__(self, k=7, num_classes=81, layers=(3, 4, 23, 3), widths=(64, 128, 256, 512), stem_width=64,
                 reduced_channels=1024):
        super().__init__()
        self.k, self.num_classes = k, num_classes  # num_classes counts the background: C + 1
        self.backbone = ResNet(layers, "bottleneck", widths, stem_width, output_stride=16)
        self.reduce = nn.Sequential(nn.Conv2d(self.backbone.high_channels, reduced_channels, 1), nn.ReLU())
        self.ps_scores = nn.Conv2d(reduced_channels, 2 * k * k * num_classes, 1)

    def forward(self, image):
        _, conv5 = self.backbone(image)
        return self.ps_scores(self.reduce(conv5))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def assemble_rois(score_maps, boxes, k: int, num_classes: int):
    """Position-sensitive RoI assembling (FCIS section 3.2): post-processing, outside the compiled graph.

    ``score_maps``: (2 k^2 num_classes, H, W) or with a leading batch of 1, laid out as in :class:`FCIS`.
    ``boxes``: (N, 4) integer ``(x1, y1, x2, y2)`` on the score-map grid, half-open (``x1 <= x < x2``);
    image boxes are divided by the feature stride (16) and rounded by the caller. Each RoI of h x w pixels is
    split into k x k cells (pixel p of a side in cell ``floor(p * k / side)``), and each cell copies, for every
    category, the inside and the outside map of that cell. Then, per category:

    * mask: per-pixel softmax over (inside, outside), i.e. the probability of "inside";
    * detection: per-pixel max of (inside, outside), averaged over the RoI, then softmax over categories.

    Returns ``(masks, class_probs)``: a list of N arrays (num_classes, h, w) of foreground probabilities and an
    (N, num_classes) array of category probabilities (``argmax`` is the category, ``max`` its score).
    """
    maps = np.asarray(score_maps, dtype=np.float64)
    maps = maps[0] if maps.ndim == 4 else maps
    if maps.shape[0] != 2 * k * k * num_classes:
        raise ValueError(f"expected {2 * k * k * num_classes} score maps, got {maps.shape[0]}")
    grid = maps.reshape(num_classes, 2, k, k, *maps.shape[1:])
    masks, scores = [], []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=int).reshape(-1, 4):
        if not (0 <= x1 < x2 <= maps.shape[2] and 0 <= y1 < y2 <= maps.shape[1]):
            raise ValueError(f"box {(x1, y1, x2, y2)} is empty or leaves the {maps.shape[1:]} map")
        ci, cj = cell_index(y2 - y1, k)[:, None], cell_index(x2 - x1, k)[None, :]
        rows, cols = np.arange(y1, y2)[:, None], np.arange(x1, x2)[None, :]
        roi = grid[:, :, ci, cj, rows, cols]  # (num_classes, 2, h, w)
        masks.append(_softmax(roi, axis=1)[:, 0])
        scores.append(roi.max(axis=1).mean(axis=(1, 2)))
    return masks, _softmax(np.array(scores).reshape(-1, num_classes), axis=1)


register(ZooModel(
    name="fcis",
    summary="FCIS: 2k^2(C+1) position-sensitive inside/outside maps on dilated ResNet-101 (Li et al. 2017)",
    factory=FCIS,
    presets={
        "standard": ModelPreset({}, {"image": (1, 3, 257, 257)}, ("ps_score_maps",)),
        "tiny": ModelPreset(dict(k=3, num_classes=4, layers=(2, 2, 2, 2), widths=(8, 16, 24, 32), stem_width=16,
                                 reduced_channels=32), {"image": (1, 3, 65, 65)}, ("ps_score_maps",)),
    },
))
