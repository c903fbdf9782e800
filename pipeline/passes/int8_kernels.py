"""int8 kernels for the integer convs of passes/integer_convs.py (CPU targets).

That pass leaves ``conv2d(astype(xq, int32) - zx, Wq, out_dtype=int32)``: 8-bit activations, zero-centred, times
int8 weights. Computed as written, every product is a 32-bit multiply. The kernels here read the 8-bit tensor
itself and use the identity (padding included, when the padding holds ``zx``, which is the real value 0)::

    conv(xq - zx, W)[k] = conv(xq, W)[k] - zx * sum(W[k])          (the sum over all taps and input channels)

Activations are channels-last here (int8_layout.py), so four channels of a pixel are four neighbouring bytes:

* dense convs (groups 1): the input is read as it is, or, where the conv pads, padded with ``zx`` first (bytes
  are shifted by 128 there where the dot product wants the other signedness, the zero point with them); the
  weight is packed at compile time for the CPU's dot product (schedules/int8_tiles.py): ``[K/B, C/4, R, S, B,
  4]`` int8 (``B`` output channels per block: one vector of int32 sums), so that one output pixel's four input
  channels times a block's weights of them is one ``vpdpbusd`` or ``sdot``, or ``[K/B, C/4, R, S, 2, B, 2]``
  int16 for two ``vpmaddwd``; schedules/int8_conv.py tiles and tensorizes it. The output is NHWC int32, its row
  rounded up to whole register tiles and ``K`` to a whole block (cropped after, in the epilogue);
* depthwise convs: the input padded with ``zx``, one int32 multiply-add per tap, vectorised over channels;
* the compensation ``zx * sum(W[k])`` is a constant subtracted in the epilogue, with the scale, bias and
  requantization that follow (FuseOps puts them in the conv's kernel).

Exact: the same integer sums. Other integer convs (grouped, 1-D) keep TVM's legalization (exact, slower).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te
from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import ModuleRewriter
from atrous.pipeline.schedules.int8_tiles import LANES, Dot, conv_dot, default_pixels

DENSE, DEPTHWISE, PACK = "conv2d_int8", "depthwise_conv2d_int8", "pad_int8"


def _op(expr) -> str | None:
    return getattr(getattr(expr, "op", None), "name", None)


def _out_size(size, kernel, stride, dilation, before, after) -> int:
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def _as(value, dtype: str):
    """An activation byte as ``dtype`` (uint8 or int8): shifted by 128 where the dtype differs (the zero point
    shifts with it)."""
    if value.dtype == dtype:
        return value
    return (value.astype("int32") + (128 if dtype == "uint8" else -128)).astype(dtype)


def dense(data, weight, strides, dilation, before, after, zero: int, columns: int, dtype: str = "uint8"):
    """int32 sums ``[N, OH, columns, K/B*B]`` of an int8 conv over channels-last ``data`` (module docstring);
    ``weight`` packed by ``pack_weight`` (``[K/B, C/4, R, S, B, 4]``, or ``[.., 2, B, 2]`` for pmaddwd's pairs);
    ``zero``: the padding value, in ``dtype`` (the input bytes' type the dot product multiplies: uint8, or int8
    for sdot); ``columns``: output columns to compute (the row rounded up to whole register tiles; the caller
    crops)."""
    n, height, width, channels = (int(d) for d in data.shape)
    pairs = len(weight.shape) == 7
    kb, cb, taps_y, taps_x = (int(d) for d in weight.shape[:4])
    block = int(weight.shape[5] if pairs else weight.shape[4])
    ph = height + before[0] + after[0]
    pw = max(width + before[1] + after[1], (columns - 1) * strides[1] + (taps_x - 1) * dilation[1] + 1)
    if (ph, pw) == (height, width) and channels == cb * LANES and data.dtype == dtype:
        padded = data  # read as it is: four channels of a pixel are four neighbouring bytes already
    else:
        def pad(nn, y, x, c):
            yy, xx = y - before[0], x - before[1]
            inside = tvm.tirx.all(c < channels, yy >= 0, yy < height, xx >= 0, xx < width)
            value = _as(data[nn, yy, xx, tvm.tirx.min(c, channels - 1)], dtype)
            return tvm.tirx.if_then_else(inside, value, tvm.tirx.const(zero, dtype))

        padded = te.compute((n, ph, pw, cb * LANES), pad, name=PACK)
    oh = _out_size(height, taps_y, strides[0], dilation[0], before[0], after[0])
    rc = te.reduce_axis((0, cb), name="rc")
    ry, rx = te.reduce_axis((0, taps_y), name="ry"), te.reduce_axis((0, taps_x), name="rx")
    # the four channels of a step: one axis, or two (a pair, a channel of it) for pmaddwd's weight pairs
    quad = [te.reduce_axis((0, 2), name="rp"), te.reduce_axis((0, 2), name="rq")] if pairs else \
        [te.reduce_axis((0, LANES), name="ri")]

    def body(nn, y, x, k):
        c = rc * LANES + (quad[0] * 2 + quad[1] if pairs else quad[0])
        pixel = padded[nn, y * strides[0] + ry * dilation[0], x * strides[1] + rx * dilation[1], c]
        w = (weight[k // block, rc, ry, rx, quad[0], k % block, quad[1]] if pairs
             else weight[k // block, rc, ry, rx, k % block, quad[0]])
        return te.sum(pixel.astype("int32") * w.astype("int32"), axis=[rc, ry, rx, *quad])

    return te.compute((n, oh, columns, kb * block), body, name=DENSE)


def depthwise(data, weight, strides, dilation, before, after, zero: int):
    """int32 sums of a depthwise int8 conv over channels-last ``data`` padded with ``zero`` (its own dtype);
    ``weight``: ``[C, R, S, 1]`` (OHWI)."""
    n, height, width, channels = (int(d) for d in data.shape)
    taps_y, taps_x = (int(d) for d in weight.shape[1:3])
    padded = te.compute(
        (n, height + before[0] + after[0], width + before[1] + after[1], channels),
        lambda nn, y, x, c: tvm.tirx.if_then_else(
            tvm.tirx.all(y >= before[0], y < height + before[0], x >= before[1], x < width + before[1]),
            data[nn, y - before[0], x - before[1], c], tvm.tirx.const(zero, data.dtype)), name=PACK)
    oh = _out_size(height, taps_y, strides[0], dilation[0], before[0], after[0])
    ow = _out_size(width, taps_x, strides[1], dilation[1], before[1], after[1])
    ry, rx = te.reduce_axis((0, taps_y), name="ry"), te.reduce_axis((0, taps_x), name="rx")

    def body(nn, y, x, c):
        pixel = padded[nn, y * strides[0] + ry * dilation[0], x * strides[1] + rx * dilation[1], c]
        return te.sum(pixel.astype("int32") * weight[c, ry, rx, 0].astype("int32"), axis=[ry, rx])

    return te.compute((n, oh, ow, channels), body, name=DEPTHWISE)


def pack_weight(kernel: np.ndarray, dot: Dot) -> np.ndarray:
    """``[K, R, S, C]`` (OHWI) int8 -> ``[K/B, C/4, R, S, B, 4]`` (``dot.pairs``: ``[K/B, C/4, R, S, 2, B, 2]``,
    a step's channels as two pairs) in ``dot.weight_dtype``, zeros where K or C do not fill a block."""
    kernel = kernel.transpose(0, 3, 1, 2)
    k, c, r, s = kernel.shape
    block = dot.block
    kb, cb = -(-k // block), -(-c // LANES)
    padded = np.zeros((kb * block, cb * LANES, r, s), np.int8)
    padded[:k, :c] = kernel
    if dot.pairs:
        pairs = padded.reshape(kb, block, cb, 2, 2, r, s).transpose(0, 2, 5, 6, 3, 1, 4)
        return np.ascontiguousarray(pairs).astype(dot.weight_dtype)
    return np.ascontiguousarray(padded.reshape(kb, block, cb, LANES, r, s).transpose(0, 2, 4, 5, 1, 3))


def _whole_tiles(out_shape: list[int], target) -> int:
    """``out_shape``: NHWC."""
    """The output row rounded up to whole tiles of the default register tile (schedules/int8_conv.py): the
    dot-product instruction cannot be tensorized into a tile cut short by a bounds check, so the kernel computes
    the extra columns (from padding) and the crop after it drops them."""
    pixels = default_pixels(target, out_shape)
    return -(-out_shape[2] // pixels) * pixels


@mutator
class _Rewriter(ModuleRewriter):
    def __init__(self, mod, target):
        super().__init__(mod)
        self.target = target
        self.taken = 0

    def visit_call_(self, call):
        rewritten = self._rewrite(call) if _op(call) == "relax.nn.conv2d" else None
        return rewritten if rewritten is not None else super().visit_call_(call)

    def _bound(self, expr):
        return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

    def _centred(self, expr):
        """(xq channels-last, zx) when ``expr`` is ``astype(xq, int32) - zx`` over an 8-bit ``xq`` (integer_convs.py),
        channels-last, or made so by a transpose of it (the graph's first conv, after int8_layout.py)."""
        value = self._bound(expr)
        transposed = _op(value) == "relax.permute_dims" and [int(a) for a in value.attrs.axes] == [0, 2, 3, 1]
        if transposed:
            value = self._bound(value.args[0])
        if _op(value) != "relax.subtract" or not isinstance(value.args[1], tvm.ir.expr.GenericConst):
            return None
        cast = self._bound(value.args[0])
        if _op(cast) != "relax.astype" or cast.args[0].ty.dtype not in ("uint8", "int8"):
            return None
        xq = self.visit_expr(cast.args[0])
        if transposed:
            xq = self.builder_.emit(relax.op.permute_dims(xq, [0, 2, 3, 1]))
        return xq, int(value.args[1].value.numpy())

    def _rewrite(self, call):
        attrs = call.attrs
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NHWC", "OHWI", "NHWC"):
            return None
        if attrs.out_dtype != "int32" or not isinstance(call.args[1], tvm.ir.expr.GenericConst):
            return None
        kernel = call.args[1].value.numpy()
        if kernel.dtype != np.int8:
            return None
        centred = self._centred(call.args[0])
        if centred is None:
            return None
        xq, zx = centred
        channels, groups = int(call.args[0].ty.shape[3]), int(attrs.groups)
        pads = [int(p) for p in attrs.padding]
        spatial = ([int(s) for s in attrs.strides], [int(d) for d in attrs.dilation], pads[:2], pads[2:])
        out_channels = kernel.shape[0]
        out_shape = [int(d) for d in call.ty.shape.values]
        if groups == 1:
            dot = conv_dot(self.target, kernel)
            dtype = "int8" if dot.signed_input else "uint8"
            shift = {("int8", "uint8"): 128, ("uint8", "int8"): -128}.get((str(xq.ty.dtype), dtype), 0)
            zero = zx + shift
            columns = _whole_tiles(out_shape, self.target)
            sums = self.builder_.call_te(dense, xq, relax.const(pack_weight(kernel, dot), dot.weight_dtype),
                                         *spatial, zero, columns, dtype, primfunc_name_hint=DENSE)
            if -(-out_channels // dot.block) * dot.block != out_channels or columns != out_shape[2]:
                sums = relax.op.strided_slice(sums, axes=[2, 3], begin=[0, 0], end=[out_shape[2], out_channels])
        elif groups == channels == out_channels and kernel.shape[3] == 1:
            zero = zx
            sums = self.builder_.call_te(depthwise, xq, relax.const(kernel, "int8"), *spatial, zx,
                                         primfunc_name_hint=DEPTHWISE)
        else:
            return None
        compensation = (zero * kernel.astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32)
        self.taken += 1
        return relax.op.subtract(sums, relax.const(compensation.reshape(1, 1, 1, -1), "int32"))


@tvm.transform.module_pass(opt_level=0, name="Int8Kernels")
class Int8Kernels:
    """The integer convs of passes/integer_convs.py as the int8 kernels of the module docstring (CPU targets)."""

    def transform_module(self, mod, _ctx):
        target = tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "llvm":
            return mod
        return _Rewriter(mod, target).transform()
