"""Split dilated convs into bands of outputs that read the same live taps, so partially valid taps cost nothing.

With a large rate on a small map (ASPP: rate 12 on 17x17), most outputs see real input under only some taps of
the kernel; the rest multiply zero padding. For a stride-1 conv, the taps that are in range for output ``o`` along
one axis form a contiguous run ``[a(o), b(o)]``, and consecutive outputs share it in a few bands (border, middle,
border). Each (row band x column band) becomes its own conv over a slice of the input, with the kernel cropped to
that band's taps and no padding at all; the pieces are concatenated back. Every output sums the same non-zero
products in the same order as before: exact.

Rate 12 on 17x17 keeps 28% of the multiply-adds, rate 6 58%. Convs where the saving is small (a rate-2 conv keeps
85% on 17x17) are left whole: each band is a kernel launch and a copy.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import ModuleRewriter

MAX_KEPT = 0.7  # partition only when the bands keep at most this share of the multiply-adds


def bands(size: int, kernel: int, dilation: int, pad_lo: int, pad_hi: int) -> list[tuple[int, int, int, int]]:
    """Bands ``(o0, o1, a, b)``: outputs ``o0 <= o < o1`` read real input exactly under taps ``a..b`` (stride 1)."""
    out = size + pad_lo + pad_hi - dilation * (kernel - 1)
    result = []
    for o in range(out):
        live = [t for t in range(kernel) if 0 <= o - pad_lo + t * dilation < size]
        a, b = (live[0], live[-1]) if live else (kernel // 2, kernel // 2 - 1)  # empty: no taps at all
        if result and result[-1][2:] == (a, b):
            result[-1] = (result[-1][0], o + 1, a, b)
        else:
            result.append((o, o + 1, a, b))
    return result


def kept_share(row_bands, col_bands, kernel_h: int, kernel_w: int) -> float:
    rows = sum((o1 - o0) * (b - a + 1) for o0, o1, a, b in row_bands)
    cols = sum((o1 - o0) * (b - a + 1) for o0, o1, a, b in col_bands)
    out_h, out_w = row_bands[-1][1], col_bands[-1][1]
    return rows * cols / (out_h * out_w * kernel_h * kernel_w)


@mutator
class _Rewriter(ModuleRewriter):
    def visit_call_(self, call):
        if getattr(call.op, "name", None) == "relax.nn.conv2d":
            rewritten = self._rewrite(call)
            if rewritten is not None:
                return rewritten
        return super().visit_call_(call)

    def _rewrite(self, call):
        attrs, (data, weight) = call.attrs, call.args
        if (attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or int(attrs.groups) != 1
                or any(int(s) != 1 for s in attrs.strides) or not isinstance(weight, tvm.ir.expr.GenericConst)):
            return None
        dilation = [int(d) for d in attrs.dilation]
        if max(dilation) == 1:
            return None
        shape = [int(d) for d in data.ty.shape.values]
        kernel = weight.value.numpy()
        pads = [int(p) for p in attrs.padding]
        per_axis = [bands(shape[2 + i], kernel.shape[2 + i], dilation[i], pads[i], pads[i + 2]) for i in (0, 1)]
        if any(a > b for axis in per_axis for _, _, a, b in axis):
            return None  # some outputs see padding only (the bias alone): leave it to the whole conv
        if kept_share(*per_axis, kernel.shape[2], kernel.shape[3]) > MAX_KEPT:
            return None
        x = self.visit_expr(data)
        rows = []
        for y0, y1, a, b in per_axis[0]:
            pieces = []
            for x0, x1, c, e in per_axis[1]:
                starts = [y0 - pads[0] + a * dilation[0], x0 - pads[1] + c * dilation[1]]
                ends = [y1 - 1 - pads[0] + b * dilation[0] + 1, x1 - 1 - pads[1] + e * dilation[1] + 1]
                window = self.builder_.emit(relax.op.strided_slice(x, axes=[2, 3], begin=starts, end=ends))
                taps = np.ascontiguousarray(kernel[:, :, a:b + 1, c:e + 1])
                pieces.append(self.builder_.emit(relax.op.nn.conv2d(
                    window, relax.const(taps), strides=[1, 1], padding=[0, 0, 0, 0],
                    dilation=[dilation[0] if b > a else 1, dilation[1] if e > c else 1],
                    data_layout="NCHW", kernel_layout="OIHW", out_layout=attrs.out_layout,
                    out_dtype=attrs.out_dtype or None)))
            rows.append(pieces[0] if len(pieces) == 1 else self.builder_.emit(relax.op.concat(pieces, axis=3)))
        return rows[0] if len(rows) == 1 else relax.op.concat(rows, axis=2)


@tvm.transform.module_pass(opt_level=0, name="PartitionBorders")
class PartitionBorders:
    """Split dilated convs into per-band convs over their live taps (see module docstring)."""

    def transform_module(self, mod, _ctx):
        return _Rewriter(mod).transform()
