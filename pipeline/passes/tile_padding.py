"""Pad dense convs out to whole register tiles (CPU targets), then crop the result back.

The CPU conv schedule (schedules/packed_conv.py) computes a tile of up to 6 neighbouring output pixels x 1-4
vectors of output channels per step (``register_tile``), and both must divide the conv's output exactly: a bounds
check inside the tile stops LLVM from keeping the accumulators in registers, and a channel count that fills no
whole vector leaves the conv to the slower row-vectorised schedule. The zoo misses both often:

* rows: DeepLab's feature maps at 257x257 are 2^k+1 wide (129, 65, 33, 17; 17 is prime), so convs fell back to
  a one-pixel tile (a 17x17 1x1 conv 1024->256: 6.8 ms, vs 2.7 ms for 18x18, znver3, 2 threads);
* channels: FCIS's position-sensitive score conv has 2k^2(C+1) = 2058 outputs (not a multiple of 8): that one
  1x1 conv took 47% of the model's time (597 ms of 1257 ms).

So a dense conv (groups 1, constant weight) gets ``extra`` columns of right padding and zero filters up to whole
tiles, and a crop back right after it: ``conv(x, w, pad_hi=p) == crop(conv(x, [w; 0], pad_hi=p + extra*stride))``.
The added columns and channels are computed and discarded; every kept output is computed exactly as before.
The cost is the added work (17 -> 18 columns: 6%; 2058 -> 2064 channels: 0.3%) and a crop fused into the epilogue.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from atrous.pipeline.schedules.packed_conv import MIN_IN_CHANNELS, register_budget, register_tile, vector_lanes
from atrous.pipeline.schedules.pixel_conv import is_pointwise, pixel_tile
from atrous.pipeline.passes.mutate import ModuleRewriter, constant_conv, conv_op


def round_up(size: int, tile: int) -> int:
    """The smallest multiple of ``tile`` that is at least ``size`` (sizes below one tile stay as they are)."""
    return size if size < tile else -(-size // tile) * tile


@mutator
class _Rewriter(ModuleRewriter):
    def __init__(self, mod, target, keep_pointwise):
        super().__init__(mod)
        self.target, self.keep_pointwise = target, keep_pointwise
        self.padded = 0  # convs rewritten (for reports and tests)

    def visit_call_(self, call):
        ndim = constant_conv(call)
        # float convs only: the integer convs of QDQ graphs get int8 kernels with their own tiles (int8_kernels.py)
        dense = ndim and int(call.attrs.groups) == 1 and call.args[1].ty.dtype == "float32"
        rewritten = self._rewrite(call, ndim) if dense else None
        return rewritten if rewritten is not None else super().visit_call_(call)

    def _rewrite(self, call, ndim):
        attrs, (data, weight) = call.attrs, call.args
        out_shape = [int(d) for d in call.ty.shape.values]
        kernel = weight.value.numpy()
        out_channels, in_channels, width = kernel.shape[0], kernel.shape[1], out_shape[-1]
        strides, padding = tuple(int(s) for s in attrs.strides), tuple(int(p) for p in attrs.padding)
        if (self.keep_pointwise and is_pointwise(kernel.shape[2:], strides, padding, int(attrs.groups))
                and pixel_tile(self.target, out_channels, in_channels, int(np.prod(out_shape[2:])))):
            return None  # PixelConv's: it tiles the pixels of the whole image, whatever the row length
        lanes, budget = vector_lanes(self.target), register_budget(self.target, kernel.shape[-1])
        # channels up to a whole number of the best tile's channel block when that adds little, else of vectors
        block = register_tile(None, 4 * lanes, lanes, budget)[1]
        channels = round_up(out_channels, block)
        if channels - out_channels > out_channels // 8:
            channels = round_up(out_channels, lanes)
        # the tile PackedConv will pick for the padded conv on this target
        tile = register_tile(None, channels, lanes, budget)
        if tile is None or in_channels < MIN_IN_CHANNELS:
            return None
        wide = round_up(width, tile[0])
        if (channels, wide) == (out_channels, width):
            return None
        pads = [int(p) for p in attrs.padding]
        pads[-1] += (wide - width) * int(attrs.strides[-1])
        filters = np.concatenate([kernel, np.zeros((channels - out_channels, *kernel.shape[1:]), kernel.dtype)])
        padded = self.builder_.emit(conv_op(ndim)(
            self.visit_expr(data), weight if channels == out_channels else relax.const(filters),
            strides=[int(s) for s in attrs.strides], padding=pads, dilation=[int(d) for d in attrs.dilation],
            groups=1, data_layout=attrs.data_layout, kernel_layout=attrs.kernel_layout,
            out_layout=attrs.out_layout, out_dtype=attrs.out_dtype or None))
        self.padded += 1
        return relax.op.strided_slice(padded, axes=[1, len(out_shape) - 1], begin=[0, 0], end=[out_channels, width])


@tvm.transform.module_pass(opt_level=0, name="PadToTiles")
class PadToTiles:
    """Pad dense conv rows and output channels to whole register tiles on CPU targets (see module docstring);
    a no-op for other targets. ``keep_pointwise``: leave the 1x1 convs that PixelConv takes as they are."""

    def __init__(self, keep_pointwise: bool = True):
        self.keep_pointwise = keep_pointwise

    def transform_module(self, mod, _ctx):
        target = tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "llvm":
            return mod
        return _Rewriter(mod, target, self.keep_pointwise).transform()
