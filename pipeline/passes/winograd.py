"""Winograd convolution for 3x3 convs, dilated ones included through phase decomposition (CPU targets).

A 3x3 conv computes each output from 9 products per input channel. Winograd's minimal filtering F(m x m, 3 x 3)
(Lavin & Gray 2016) computes an m x m tile of outputs from an (m+2) x (m+2) input tile with (m+2)^2 products per
channel instead of 9 m^2: 2.25x fewer for m = 2, 4x for m = 4. Stock compilers never apply it to a dilated conv,
but a rate-d conv is d^2 dense convs, one over each phase of the input (the pixels at ``(d*i + p, d*j + q)``:
space-to-batch), so it applies there too, and in DeepLab-style backbones the dilated 3x3 convs are most of the
work. The rewrite, in plain Relax ops, for a 3x3, stride-1, groups-1 conv over a constant weight:

1. pad (the conv's own padding, then up to whole tiles of every phase), split into the d_h x d_w phases (reshape +
   transpose: one copy), the phases becoming the batch;
2. input transform ``B^T x B`` of every tile: two depthwise convs with fixed filters (B^T along rows, then
   along columns, stride m); then one copy regroups the result by transform position;
3. the products, summed over input channels: one 1x1 conv with (m+2)^2 groups (one matrix product per transform
   position) against the transformed weights ``G w G^T``, computed here once, at compile time. This is where
   the work is, and the CPU's dense conv schedule runs it (schedules/packed_conv.py);
4. output transform ``A^T M A``: a 1x1 conv over the transform positions, then one copy back to NCHW (tiles
   and phases interleaved), cropped to the conv's output.

Not bit-exact: the transforms round differently from the direct sum (relative error ~1e-7 for m = 2, ~1e-6 for
m = 4 in float32; every use is verified against PyTorch like any other build). Which convs it takes, and with
which m, is the caller's choice (``choose``): it pays on wide convs over large maps (``make
bench-layers-winograd``: up to 2.5x) and loses on narrow ones or small maps, so by default each conv gets what
``atrous tune`` measured on the device, else a cost model (pipeline/tuning/algorithms.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from atrous.pipeline.schedules.packed_conv import register_budget, register_tile, vector_lanes
from atrous.pipeline.passes.mutate import ModuleRewriter, constant_conv, rewrite_functions

# Lavin & Gray's F(m, 3) matrices (correlation form: y_i = sum_k x_{i+k} g_k): (B^T, G, A^T)
TRANSFORMS = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}
# Input and output channels from which the rewrite pays on CPUs (make bench-layers-winograd, znver3, F(4x4)):
# 128->128 at 33x33 1.39x faster, 256 and 512 channels 1.5x-2.5x; 64->64 at 65x65 0.61x (slower: with few
# channels the transforms cost more than the products save).
MIN_CHANNELS = 128


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(m x m, 3 x 3) in float64."""
    return tuple(np.array(t, dtype=np.float64) for t in TRANSFORMS[m])


def transformed_weight(kernel: np.ndarray, m: int) -> np.ndarray:
    """``G w G^T`` of every (output, input) channel pair, as a grouped 1x1 conv weight: row ``xi * K + k`` with
    ``xi = row * (m + 2) + column`` the transform position."""
    _, g, _ = matrices(m)
    u = np.einsum("ia,kcab,jb->ijkc", g, kernel.astype(np.float64), g)
    a, k, c = g.shape[0], kernel.shape[0], kernel.shape[1]
    return u.reshape(a * a * k, c, 1, 1).astype(kernel.dtype)


def input_filters(channels: int, m: int, dtype, axis: int) -> np.ndarray:
    """Depthwise conv weight applying B^T along one axis (2: rows, 3: columns) with channel multiplier m + 2:
    filter ``c * (m+2) + i`` of channel c is row i of B^T. Rows then columns compute ``B^T x B`` of every tile
    with 2 (m+2)^3 multiply-adds instead of the (m+2)^4 of one 2-D filter per transform position."""
    bt, _, _ = matrices(m)
    a = bt.shape[0]
    filters = bt.reshape(a, 1, a, 1) if axis == 2 else bt.reshape(a, 1, 1, a)
    return np.tile(filters, (channels, 1, 1, 1)).astype(dtype)


def output_matrix(m: int, dtype) -> np.ndarray:
    """``A^T M A`` as one (m^2, (m+2)^2) matrix: row ``i * m + j``, column ``xi``."""
    _, _, at = matrices(m)
    return np.einsum("ix,jy->ijxy", at, at).reshape(m * m, at.shape[1] ** 2).astype(dtype)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def tile_counts(out_h: int, out_w: int, dilation: tuple[int, int], m: int, batch: int, pixels: int):
    """Tiles per phase (rows, columns) covering the output, columns widened until the products' pixel count
    (phases x tiles) is a whole number of the dense conv schedule's ``pixels``-wide register tiles."""
    rows, cols = _ceil(_ceil(out_h, dilation[0]), m), _ceil(_ceil(out_w, dilation[1]), m)
    phases = dilation[0] * dilation[1] * batch
    while (phases * rows * cols) % pixels:
        cols += 1
    return rows, cols


@dataclass(frozen=True)
class Conv:
    """A conv the rewrite can take: 3x3, stride 1, groups 1, float32, NCHW, over a constant weight."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    out_h: int
    out_w: int

    def fits(self, m: int) -> bool:
        """Every phase at least one whole tile of outputs (a rate beyond the map would make most of each tile
        padding: dead_taps and border_bands handle those)."""
        return self.out_h >= m * self.dilation[0] and self.out_w >= m * self.dilation[1]

    def key(self) -> str:
        """The conv's shape as a measurement table names it: ``NxCxHxW->K dDHxDW pT,L,B,R``."""
        return (f"{self.batch}x{self.in_channels}x{self.height}x{self.width}->{self.out_channels} "
                f"d{self.dilation[0]}x{self.dilation[1]} p{','.join(str(p) for p in self.padding)}")


def conv_of(call) -> Conv | None:
    """The conv ``call`` computes, if the rewrite can take it."""
    if constant_conv(call) != 2:
        return None
    attrs, kernel = call.attrs, [int(k) for k in call.args[1].value.shape]
    if not (int(attrs.groups) == 1 and [int(s) for s in attrs.strides] == [1, 1] and kernel[2:] == [3, 3]
            and (attrs.out_dtype or "float32") == "float32" and call.args[0].ty.dtype == "float32"):
        return None
    n, c, h, w = (int(v) for v in call.args[0].ty.shape.values)
    out_h, out_w = (int(v) for v in call.ty.shape.values[2:])
    return Conv(n, c, h, w, kernel[0], tuple(int(d) for d in attrs.dilation),
                tuple(int(p) for p in attrs.padding), out_h, out_w)


# the module attribute listing what the pass did with each conv it could take, as "conv key: m" (0: direct)
DECISIONS = "atrous_winograd"
# how the pass asks which tile m a conv gets (None: leave it direct), given the target
Choose = Callable[[Conv, tvm.target.Target], "int | None"]


def threshold(m: int, min_channels: int = MIN_CHANNELS) -> Choose:
    """Every conv with at least ``min_channels`` input and output channels as F(m x m, 3 x 3)."""
    return lambda conv, _target: m if min(conv.in_channels, conv.out_channels) >= min_channels else None


def products_tile(target, out_channels: int) -> int:
    """Pixels per register tile of the dense conv schedule that runs the products."""
    pixels = register_tile(None, out_channels, vector_lanes(target), register_budget(target, 1))
    return pixels[0] if pixels else 1


@mutator
class _Rewriter(ModuleRewriter):
    def __init__(self, mod, target, choose: Choose):
        super().__init__(mod)
        self.target, self.choose = target, choose
        self.decisions: list[str] = []  # "conv key: m" (0: direct) of every conv it could take

    def transform(self):
        mod = rewrite_functions(self, self.mod)
        return mod.with_attr(DECISIONS, self.decisions) if self.decisions else mod

    def visit_call_(self, call):
        conv = conv_of(call)
        m = self.choose(conv, self.target) if conv is not None else None
        if conv is not None:
            self.decisions.append(f"{conv.key()}: {m if m and conv.fits(m) else 0}")
        return self._rewrite(call, conv, m) if m and conv.fits(m) else super().visit_call_(call)

    def _rewrite(self, call, conv: Conv, m: int):
        emit = self.builder_.emit
        data, weight = call.args
        kernel = weight.value.numpy()
        dtype = kernel.dtype
        n, in_c, height, width, out_c = conv.batch, conv.in_channels, conv.height, conv.width, conv.out_channels
        out_h, out_w = conv.out_h, conv.out_w
        (dh, dw), (top, left, _, _) = conv.dilation, conv.padding
        a, positions = m + 2, (m + 2) ** 2
        # the products are a 1x1 conv over ``phases x tiles`` pixels laid out as rows of the register tile's width
        pixels = products_tile(self.target, out_c)
        rows, cols = tile_counts(out_h, out_w, (dh, dw), m, n, pixels)
        phases, span = dh * dw * n, rows * cols
        in_rows, in_cols = m * rows + 2, m * cols + 2  # per phase, every tile's input
        x = emit(relax.op.nn.pad(self.visit_expr(data), [0, 0, 0, 0, top, dh * in_rows - height - top,
                                                          left, dw * in_cols - width - left]))
        if dh * dw > 1:  # phases as the batch: x[n, c, i*dh + p, j*dw + q] -> x[(p, q, n), c, i, j]
            x = emit(relax.op.reshape(x, [n, in_c, in_rows, dh, in_cols, dw]))
            x = emit(relax.op.permute_dims(x, [3, 5, 0, 1, 2, 4]))
            x = emit(relax.op.reshape(x, [phases, in_c, in_rows, in_cols]))
        # B^T along rows (stride m: one output row per tile row), then along columns; channel c*(m+2)^2 + xi
        v = emit(relax.op.nn.conv2d(x, relax.const(input_filters(in_c, m, dtype, 2)), strides=[m, 1], groups=in_c))
        v = emit(relax.op.nn.conv2d(v, relax.const(input_filters(in_c * a, m, dtype, 3)), strides=[1, m],
                                    groups=in_c * a))
        # (phase, c, xi, tile) -> (xi, c, phase, tile): each transform position's channels together
        v = emit(relax.op.reshape(v, [phases, in_c, positions, span]))
        v = emit(relax.op.permute_dims(v, [2, 1, 0, 3]))
        v = emit(relax.op.reshape(v, [1, positions * in_c, phases * span // pixels, pixels]))
        products = emit(relax.op.nn.conv2d(v, relax.const(transformed_weight(kernel, m)), groups=positions))
        # the output transform sums over transform positions: a 1x1 conv with them as input channels
        products = emit(relax.op.reshape(products, [1, positions, out_c * phases * span // pixels, pixels]))
        y = emit(relax.op.nn.conv2d(products, relax.const(output_matrix(m, dtype)[:, :, None, None])))
        # (i, j, k, p, q, n, tile row, tile column) -> (n, k, tile row, i, p, tile column, j, q)
        y = emit(relax.op.reshape(y, [m, m, out_c, dh, dw, n, rows, cols]))
        y = emit(relax.op.permute_dims(y, [5, 2, 6, 0, 3, 7, 1, 4]))
        y = emit(relax.op.reshape(y, [n, out_c, rows * m * dh, cols * m * dw]))
        return relax.op.strided_slice(y, axes=[2, 3], begin=[0, 0], end=[out_h, out_w])


@tvm.transform.module_pass(opt_level=0, name="Winograd")
class Winograd:
    """3x3 convs (any dilation) as Winograd F(m x m, 3 x 3) on CPU targets (see module docstring); a no-op for
    other targets. ``choose`` gives each conv's m (None: leave it direct); without it, every conv with at least
    ``min_channels`` input and output channels gets ``m``."""

    def __init__(self, m: int = 4, min_channels: int = MIN_CHANNELS, choose: Choose | None = None):
        if m not in TRANSFORMS:
            raise ValueError(f"Winograd tile {m} is not one of {sorted(TRANSFORMS)}")
        chosen = choose or threshold(m, min_channels)
        self.choose = lambda conv, target: _checked(chosen(conv, target))

    def transform_module(self, mod, _ctx):
        target = tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "llvm":
            return mod
        return _Rewriter(mod, target, self.choose).transform()


def _checked(m: int | None) -> int | None:
    if m is not None and m not in TRANSFORMS:
        raise ValueError(f"Winograd tile {m} is not one of {sorted(TRANSFORMS)}")
    return m
