"""InstanceFCN (Dai et al. 2016, "Instance-sensitive Fully Convolutional Networks"), section 4 and Fig. 3.

Backbone: VGG-16 at feature stride 8 by atrous convolution (pool4 stride 1, conv5 dilated by 2; pool5 and the fc
layers are dropped). Two fully convolutional branches on conv5:

* instance-sensitive score maps: 1x1 conv (512, ReLU) -> 3x3 conv to k^2 maps, map ``i * k + j`` scoring
  "pixel is in the (i, j)-th cell of an instance" (k x k grid of relative positions);
* objectness: 3x3 conv (512, ReLU) -> 1x1 conv to 1 map, a per-pixel logistic regression. The sigmoid is not in
  the graph: the output is the logit.

The instance assembling module (section 3) has no weights and works on sliding windows chosen by the caller,
so it is *not* part of the compiled graph: :func:`assemble_instances` is the post-processing step that runs on the
compiled model's ``score_maps`` output.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from atrous.models.backbones import VGG16
from atrous.models.registry import ModelPreset, ZooModel, register


class InstanceFCN(nn.Module):
    def __init__(self, k=5, widths=(64, 128, 256, 512, 512), branch_channels=512):
        super().__init__()
        self.k = k
        self.backbone = VGG16(widths, pool5=False, conv5_dilation=2)
        cin = self.backbone.out_channels
        self.score_branch = nn.Sequential(nn.Conv2d(cin, branch_channels, 1), nn.ReLU(),
                                          nn.Conv2d(branch_channels, k * k, 3, padding=1))
        self.objectness_branch = nn.Sequential(nn.Conv2d(cin, branch_channels, 3, padding=1), nn.ReLU(),
                                               nn.Conv2d(branch_channels, 1, 1))

    def forward(self, image):
        feats = self.backbone(image)
        return self.score_branch(feats), self.objectness_branch(feats)


def cell_index(size: int, k: int) -> np.ndarray:
    """For each of ``size`` positions along one side of a window, its cell among ``k`` (floor(p * k / size))."""
    return np.arange(size) * k // size


def assemble_instances(score_maps, window_positions, window_size: int, k: int) -> np.ndarray:
    """Instance assembling module (Dai et al. 2016, section 3, Fig. 2): post-processing, outside the graph.

    ``score_maps``: (k*k, H, W) or (1, k*k, H, W), map ``i * k + j`` for the cell in row i, column j.
    ``window_positions``: (N, 2) top-left corners ``(y, x)`` of m x m windows on the score-map grid
    (``m = window_size``), each fully inside the map. An m x m window is split into a k x k grid of cells
    (pixel p of a side belongs to cell ``floor(p * k / m)``); every pixel of cell (i, j) copies the value at the
    same position of score map ``i * k + j``. Returns the assembled instances, (N, m, m), in the score maps' units
    (logits if the maps are logits).
    """
    maps = np.asarray(score_maps)
    maps = maps[0] if maps.ndim == 4 else maps
    if maps.shape[0] != k * k:
        raise ValueError(f"expected {k * k} score maps for k={k}, got {maps.shape[0]}")
    height, width = maps.shape[1:]
    cells = cell_index(window_size, k)
    channel = cells[:, None] * k + cells[None, :]  # (m, m): which map each window pixel reads
    rows, cols = np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")
    masks = []
    for y, x in np.asarray(window_positions, dtype=int).reshape(-1, 2):
        if y < 0 or x < 0 or y + window_size > height or x + window_size > width:
            raise ValueError(f"window at ({y}, {x}) of size {window_size} leaves the {height}x{width} map")
        masks.append(maps[channel, y + rows, x + cols])
    return np.stack(masks) if masks else np.zeros((0, window_size, window_size), maps.dtype)


register(ZooModel(
    name="instancefcn",
    summary="InstanceFCN: k x k instance-sensitive score maps + objectness on atrous VGG-16 (Dai et al. 2016)",
    factory=InstanceFCN,
    presets={
        "standard": ModelPreset({}, {"image": (1, 3, 257, 257)}, ("score_maps", "objectness")),
        "tiny": ModelPreset(dict(k=3, widths=(8, 16, 32, 32, 32), branch_channels=32), {"image": (1, 3, 65, 65)},
                            ("score_maps", "objectness")),
    },
))
