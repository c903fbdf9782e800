"""Transposed convs as one dense conv over the output phases (sub-pixel convolution).

A stride-s transposed conv is lowered as its definition: spread the input with s-1 zeros between pixels, pad, and
convolve with the flipped kernel, so s^2 - 1 of every s^2 products multiply an inserted zero, and the kernel is
computed inside the loop nest, which no dense conv schedule takes. LinkNet's decoder upsamples this way at every
stage. But each output phase (the outputs at ``(s*q + r_h - pad, s*w + r_w - pad)``) only ever meets the kernel
taps ``u = r + s*t``: it is an ordinary stride-1 conv of the input with a ceil(k/s) x ceil(k/s) sub-kernel. All
s^2 phases together are one conv with s^2 x K output channels, over a constant weight (the dense conv schedule
runs it), followed by one depth-to-space copy and a crop. Exact: the same products, minus the zeros (summed in
another order, so the last bit may differ).

Taken: 2-D, NCHW/IOHW, groups 1, dilation 1, float32, a constant weight. For 3x3 stride 2 this is 4 taps per
output phase instead of 9 (2x2 sub-kernels, one of them padded with zero taps), for 2x2 stride 2 one 1x1 conv. A
stride-1 transposed conv has no zeros to skip but still computes its kernel in the loop nest: it becomes a
plain conv with the flipped kernel (one phase).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import ModuleRewriter


def phase_weight(kernel: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
    """The (s_h * s_w * K, C, T_h, T_w) weight of the phase conv from a transposed conv's (C, K, k_h, k_w)
    weight: output channel ``(r_h * s_w + r_w) * K + o``, tap ``t'`` = kernel tap ``r + s * (T - 1 - t')``
    (zero past the kernel's end)."""
    c, k, kh, kw = kernel.shape
    (sh, sw), th, tw = stride, -(-kh // stride[0]), -(-kw // stride[1])
    out = np.zeros((sh, sw, k, c, th, tw), dtype=kernel.dtype)
    for rh in range(sh):
        for rw in range(sw):
            for i in range(th):
                for j in range(tw):
                    u, v = rh + sh * (th - 1 - i), rw + sw * (tw - 1 - j)
                    if u < kh and v < kw:
                        out[rh, rw, :, :, i, j] = kernel[:, :, u, v].T
    return out.reshape(sh * sw * k, c, th, tw)


def _transposed_conv(call) -> bool:
    if getattr(call.op, "name", None) != "relax.nn.conv2d_transpose":
        return False
    attrs = call.attrs
    return (isinstance(call.args[1], tvm.ir.expr.GenericConst) and (attrs.data_layout, attrs.kernel_layout) ==
            ("NCHW", "IOHW") and int(attrs.groups) == 1 and [int(d) for d in attrs.dilation] == [1, 1]
            and call.args[0].ty.dtype == "float32"
            and (attrs.out_dtype or "float32") == "float32")


@mutator
class _Rewriter(ModuleRewriter):
    def visit_call_(self, call):
        return self._rewrite(call) if _transposed_conv(call) else super().visit_call_(call)

    def _rewrite(self, call):
        emit = self.builder_.emit
        attrs, (data, weight) = call.attrs, call.args
        kernel = weight.value.numpy()
        n, _, height, width = (int(v) for v in data.ty.shape.values)
        out_c, (out_h, out_w) = kernel.shape[1], (int(v) for v in call.ty.shape.values[2:])
        (sh, sw), (top, left) = (int(s) for s in attrs.strides), (int(p) for p in attrs.padding[:2])
        th, tw = -(-kernel.shape[2] // sh), -(-kernel.shape[3] // sw)
        # output index i + pad = s*q + r: phase r, position q; q runs over the outputs the crop keeps
        rows, cols = -(-(top + out_h) // sh), -(-(left + out_w) // sw)
        x = self.visit_expr(data)
        y = emit(relax.op.nn.conv2d(x, relax.const(phase_weight(kernel, (sh, sw))),
                                    padding=[th - 1, tw - 1, max(0, rows - height), max(0, cols - width)]))
        if int(y.ty.shape.values[2]) != rows or int(y.ty.shape.values[3]) != cols:
            y = emit(relax.op.strided_slice(y, axes=[2, 3], begin=[0, 0], end=[rows, cols]))
        if sh * sw > 1:  # (n, r_h, r_w, o, q_h, q_w) -> (n, o, q_h, r_h, q_w, r_w): depth to space
            y = emit(relax.op.reshape(y, [n, sh, sw, out_c, rows, cols]))
            y = emit(relax.op.permute_dims(y, [0, 3, 4, 1, 5, 2]))
            y = emit(relax.op.reshape(y, [n, out_c, rows * sh, cols * sw]))
        return relax.op.strided_slice(y, axes=[2, 3], begin=[top, left], end=[top + out_h, left + out_w])


@tvm.transform.module_pass(opt_level=0, name="TransposedConvPhases")
class TransposedConvPhases:
    """Transposed convs as one dense conv over their output phases (see module docstring)."""

    def transform_module(self, mod, _ctx):
        return _Rewriter(mod).transform()
