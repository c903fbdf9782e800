"""Bilinear resizes as two 1-D passes with precomputed taps (CPU targets).

DeepLab ends by upsampling class scores to the input size (21 x 17 x 17 -> 21 x 257 x 257), and TVM's ``resize2d``
computes every output from scratch: source coordinates in float, floor, clamp, and four loads at data-dependent
addresses, which no schedule vectorises. In DeepLabV3-MobileNet that one kernel was the slowest of the model
(4.8 of 47 ms, tuned). Bilinear interpolation is separable, and each axis' two taps and weights depend on the
output index only, so they are constants:

* along the width, on the small input: ``t[.., h, x] = v0[x] * in[.., h, j0[x]] + v1[x] * in[.., h, j1[x]]``;
* along the height: ``out[.., y, :] = w0[y] * t[.., i0[y], :] + w1[y] * t[.., i1[y], :]``, whole rows blended.

Each pass is two ``take`` copies (kernels of their own: the fuser does not fuse a gather) and one elementwise
blend, all of which vectorise: the 4-load gather per output is gone.

The taps follow TOPI's arithmetic (float32 source coordinate, floor, clamped neighbours, ``a * (1 - f) + b * f``),
so each output is the same two lerps as before, width first: equal up to the last bit (FMA contraction). A 1-pixel
input (ASPP's image pooling branch) is a broadcast. Taken: ``linear``, NCHW, float32, at least ``MIN_OUTPUTS``
outputs, coordinate modes ``half_pixel``, ``pytorch_half_pixel``, ``align_corners``, ``asymmetric``, no region of
interest.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import ModuleRewriter

MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
# Below this many outputs the four small kernels cost more than the one gather kernel they replace (measured:
# 8 x 20 x 33 outputs, 0.063 vs 0.020 ms; 21 x 257 x 257, 1.26 vs 4.79 ms).
MIN_OUTPUTS = 1 << 16


def linear_taps(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices (out, 2) int64, weights (out, 2) float32) of 1-D linear interpolation, as TOPI computes it."""
    out = np.arange(out_size, dtype=np.float32)
    if mode == "align_corners":
        scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0)
        source = out * scale
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        if mode == "asymmetric":
            source = out * scale
        elif mode == "pytorch_half_pixel" and out_size == 1:
            source = np.zeros_like(out)
        else:  # one rounding after the multiply-add, as the compiled kernels (FMA-contracted) compute it
            source = ((out + np.float32(0.5)).astype(np.float64) * np.float64(scale) - 0.5).astype(np.float32)
    floor = np.floor(source)
    frac = (source - floor).astype(np.float32)
    low = np.clip(floor.astype(np.int64), 0, in_size - 1)
    high = np.clip(floor.astype(np.int64) + 1, 0, in_size - 1)
    return np.stack([low, high], axis=1), np.stack([np.float32(1) - frac, frac], axis=1).astype(np.float32)


def _bilinear(call) -> bool:
    if getattr(call.op, "name", None) != "relax.image.resize2d":
        return False
    attrs = call.attrs
    return (attrs.method == "linear" and attrs.layout == "NCHW" and attrs.coordinate_transformation_mode in MODES
            and all(float(r) == 0 for r in attrs.roi) and call.args[0].ty.dtype == "float32"
            and call.ty.dtype == "float32" and all(isinstance(d, tvm.tirx.IntImm) for d in call.ty.shape.values)
            and all(isinstance(d, tvm.tirx.IntImm) for d in call.args[0].ty.shape.values)
            and int(np.prod([int(d) for d in call.ty.shape.values])) >= MIN_OUTPUTS)


@mutator
class _Rewriter(ModuleRewriter):
    def visit_call_(self, call):
        return self._rewrite(call) if _bilinear(call) else super().visit_call_(call)

    def _rewrite(self, call):
        mode = call.attrs.coordinate_transformation_mode
        x = self.visit_expr(call.args[0])
        n, c, in_h, in_w = (int(v) for v in call.args[0].ty.shape.values)
        out_h, out_w = (int(v) for v in call.ty.shape.values[2:])
        if in_h == 1 and in_w == 1:  # every tap is the one pixel
            return relax.op.broadcast_to(x, relax.ShapeExpr([n, c, out_h, out_w]))
        # equal sizes: every mode maps each output onto its own pixel with weight 1, so that axis is skipped
        if in_w != out_w:
            x = self._lerp(x, *linear_taps(in_w, out_w, mode), axis=3, last=in_h == out_h)
        if in_h != out_h:
            x = self._lerp(x, *linear_taps(in_h, out_h, mode), axis=2, last=True)
        return x

    def _lerp(self, x, taps, weights, axis: int, last: bool):
        """``x`` interpolated along ``axis``: ``a * w0 + b * w1`` with ``a``, ``b`` the two taps' slices."""
        emit = self.builder_.emit
        shape = [-1, 1] if axis == 2 else [-1]  # the weights broadcast along the axes after ``axis``
        low, high = (emit(relax.op.take(x, relax.const(taps[:, k].copy()), axis=axis, mode="clip")) for k in (0, 1))
        blend = relax.op.add(relax.op.multiply(low, relax.const(weights[:, 0].reshape(shape))),
                             relax.op.multiply(high, relax.const(weights[:, 1].reshape(shape))))
        return blend if last else emit(blend)


@tvm.transform.module_pass(opt_level=0, name="SeparableResize")
class SeparableResize:
    """Bilinear NCHW resizes as a width pass and a row-blending height pass on CPU targets (module docstring)."""

    def transform_module(self, mod, _ctx):
        target = tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "llvm":
            return mod
        return _Rewriter(mod).transform()
