"""Drop convolution taps that read only padding, for every output position.

A rate-d tap t of a kernel reads input index ``o*stride - pad_lo + t*d`` for output o. When that index is outside
``[0, size)`` for every o, the tap multiplies zeros only; removing it changes no output bit. In ASPP the rates
often exceed the feature map (DeepLabV3 at 257x257, output stride 16: rate 18 on a 17x17 map), so whole 3x3
convs collapse to 1x1 convs, and the FLOPs that touch only padding are never computed.

The rewrite keeps the taps from the first live one to the last: a kernel crop plus a padding change that keeps the output size: ``pad_lo -= t0*d`` and ``pad_hi -= (k-1-t1)*d``. Axes where
a single tap survives get dilation 1. Convs whose rewrite would need negative padding are left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import ModuleRewriter, constant_conv, conv_op


def _reads_input(t: int, size: int, out: int, stride: int, dilation: int, pad_lo: int) -> bool:
    """Whether tap t reads index ``o*stride - pad_lo + t*dilation`` inside [0, size) for some output o."""
    offset = t * dilation - pad_lo
    first = max(0, -(offset // stride))  # smallest o >= 0 with o*stride + offset >= 0
    return first < out and first * stride + offset < size


def live_taps(size: int, kernel: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> tuple[int, int]:
    """The first and last tap along one axis that read real input for some output.

    Taps outside ``[t0, t1]`` read only padding. (With stride > 1, a tap between them can be dead too; it stays,
    since the crop must be contiguous, and multiplies zeros as before.)
    """
    out = (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1
    live = [t for t in range(kernel) if _reads_input(t, size, out, stride, dilation, pad_lo)]
    if not live:  # every tap reads padding only: keep the middle one (the output is the bias alone)
        mid = kernel // 2
        return mid, mid
    return live[0], live[-1]


def _crop_axis(size, kernel, stride, dilation, pad_lo, pad_hi):
    """(t0, t1, new_pad_lo, new_pad_hi, new_dilation), or None when nothing can be dropped."""
    t0, t1 = live_taps(size, kernel, stride, dilation, pad_lo, pad_hi)
    if (t0, t1) == (0, kernel - 1):
        return None
    lo, hi = pad_lo - t0 * dilation, pad_hi - (kernel - 1 - t1) * dilation
    if lo < 0 or hi < 0:
        return None
    return t0, t1, lo, hi, 1 if t0 == t1 else dilation


@mutator
class _Rewriter(ModuleRewriter):
    def __init__(self, mod):
        super().__init__(mod)
        self.dropped = 0  # taps removed, summed over convs (for reports)

    def visit_call_(self, call):
        ndim = constant_conv(call)
        rewritten = self._rewrite(call, ndim) if ndim else None
        return rewritten if rewritten is not None else super().visit_call_(call)

    def _rewrite(self, call, ndim):
        attrs, (data, weight) = call.attrs, call.args
        shape = [int(d) for d in data.ty.shape.values]
        kernel = weight.value.numpy()
        pads = [int(p) for p in attrs.padding]
        axes = [_crop_axis(shape[2 + i], kernel.shape[2 + i], int(attrs.strides[i]), int(attrs.dilation[i]),
                           pads[i], pads[i + ndim]) for i in range(ndim)]
        if all(a is None for a in axes):
            return None
        index, lo, hi, dilation = [slice(None), slice(None)], [], [], []
        for i, axis in enumerate(axes):
            if axis is None:
                index.append(slice(None))
                lo.append(pads[i]), hi.append(pads[i + ndim]), dilation.append(int(attrs.dilation[i]))
            else:
                t0, t1, new_lo, new_hi, new_dilation = axis
                index.append(slice(t0, t1 + 1))
                lo.append(new_lo), hi.append(new_hi), dilation.append(new_dilation)
        cropped = np.ascontiguousarray(kernel[tuple(index)])
        self.dropped += int(np.prod(kernel.shape[2:]) - np.prod(cropped.shape[2:]))
        return conv_op(ndim)(self.visit_expr(data), relax.const(cropped), strides=[int(s) for s in attrs.strides],
                             padding=lo + hi, dilation=dilation, groups=int(attrs.groups),
                             data_layout=attrs.data_layout, kernel_layout=attrs.kernel_layout,
                             out_layout=attrs.out_layout, out_dtype=attrs.out_dtype or None)


@tvm.transform.module_pass(opt_level=0, name="DropDeadTaps")
class DropDeadTaps:
    """Crop conv kernels to the taps that can read real input (see module docstring)."""

    def transform_module(self, mod, _ctx):
        return _Rewriter(mod).transform()
