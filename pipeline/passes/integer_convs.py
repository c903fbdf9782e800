"""Convs of a QDQ graph as integer convs: the int8 products summed exactly in int32, scaled once at the end.

A QDQ graph (ONNX Runtime's quantizer, PyTorch's PT2E export) spells an int8 conv as float arithmetic on
dequantized values::

    conv2d(dequantize(xq, sx, zx), dequantize(Wq, sw[k], 0))      xq: uint8/int8 per tensor, Wq: int8 per channel

which equals ``sx * sw[k] * conv2d(xq - zx, Wq)`` with the conv over integers. This rewrite writes it so::

    multiply(astype(conv2d(astype(xq, int32) - zx, Wq, out_dtype=int32), float32), sx * sw[k])

A bias that ONNX Runtime's quantizer stored as int32 in the conv's scale (``dequantize(bq, sx * sw[k], 0)``)
is added to the int32 sums before the scaling, as ONNX Runtime's int8 convs add it. The conv keeps its own
semantics (zero padding of the zero-centred input is padding with the real value 0, as in
the QDQ graph), so every later rewrite that reads conv attributes (dead taps, passes/dead_taps.py) applies to it
as to a float conv; passes/int8_kernels.py then gives it an int8 kernel. The rest of the graph (bias add, the
next QuantizeLinear, ops the quantizer left in float) stays as imported and fuses into the conv's epilogue.

Exact: integer products and sums (int32 holds any sum of up to 2^16 products of 8-bit values), one float
rounding at the scale, where ONNX Runtime's int8 kernels round too. Taken: conv2d in NCHW/OIHW layouts
whose input is a per-tensor dequantize of an 8-bit tensor and whose weight is a dequantize of a constant int8
tensor with zero zero-points (per channel or per tensor); anything else stays as imported (float arithmetic on
dequantized values: correct, not faster).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import CONV_LAYOUTS, ModuleRewriter, conv_op

EIGHT_BIT = ("uint8", "int8")
# 2-D convs only: 1-D ones (WaveNet) would reach TVM's generic integer conv1d, slower than the fp32 kernels
TAKEN = ("relax.nn.conv2d",)


def _op(expr) -> str | None:
    return getattr(getattr(expr, "op", None), "name", None)


def _constant(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None


@mutator
class _Rewriter(ModuleRewriter):
    def __init__(self, mod):
        super().__init__(mod)
        self.taken = 0

    def _bound(self, expr):
        """The call ``expr`` (a dataflow variable) is bound to, if any."""
        if isinstance(expr, relax.Var):
            value = self.lookup_binding(expr)
            return value if isinstance(value, relax.Call) else None
        return expr if isinstance(expr, relax.Call) else None

    def visit_call_(self, call):
        if _op(call) in TAKEN:
            rewritten = self._rewrite(call)
        elif _op(call) == "relax.add":
            rewritten = self._integer_bias(call)
        else:
            rewritten = None
        return rewritten if rewritten is not None else super().visit_call_(call)

    def _integer_bias(self, call):
        """``conv + dequantize(bq)`` where the conv is one of ours and the bias is int32 in the conv's scale (as
        ONNX Runtime's quantizer writes it): the bias added to the int32 sums, before the one scaling, as ONNX
        Runtime's int8 convs do."""
        scaled = self._bound(self.visit_expr(call.args[0]))
        if _op(scaled) != "relax.multiply" or not isinstance(scaled.args[1], tvm.ir.expr.GenericConst):
            return None
        cast = self._bound(scaled.args[0])
        if _op(cast) != "relax.astype" or cast.args[0].ty.dtype != "int32":
            return None
        bias = self._bound(call.args[1])
        if _op(bias) == "relax.reshape":
            bias = self._bound(bias.args[0])
        if _op(bias) != "relax.dequantize":
            return None
        bq, sb, zb = (_constant(a) for a in bias.args)
        scale = _constant(scaled.args[1])
        if bq is None or sb is None or zb is None or bq.dtype != np.int32 or np.any(zb != 0):
            return None
        out_channels = scale.size
        if bq.size != out_channels or not np.allclose(np.broadcast_to(sb.reshape(-1), (out_channels,)),
                                                      scale.reshape(-1), rtol=1e-6, atol=0):
            return None
        sums = relax.op.add(cast.args[0], relax.const(bq.reshape(scale.shape).astype(np.int32), "int32"))
        return relax.op.multiply(relax.op.astype(sums, "float32"), scaled.args[1])

    def _rewrite(self, call):
        layouts = CONV_LAYOUTS[_op(call)]
        attrs = call.attrs
        if (attrs.data_layout, attrs.kernel_layout) != layouts[:2] or attrs.out_layout != layouts[0]:
            return None
        data, weight = self._bound(call.args[0]), self._bound(call.args[1])
        if _op(data) != "relax.dequantize" or _op(weight) != "relax.dequantize":
            return None
        xq, sx, zx = data.args
        wq, sw, zw = weight.args
        sx, zx, wq, sw, zw = _constant(sx), _constant(zx), _constant(wq), _constant(sw), _constant(zw)
        if any(v is None for v in (sx, zx, wq, sw, zw)) or xq.ty.dtype not in EIGHT_BIT or wq.dtype != np.int8:
            return None
        if sx.size != 1 or zx.size != 1 or np.any(zw != 0):
            return None
        out_channels = wq.shape[0]
        if sw.size not in (1, out_channels) or (sw.size > 1 and int(weight.attrs.axis) != 0):
            return None
        ndim = layouts[2]
        centred = relax.op.subtract(relax.op.astype(self.visit_expr(xq), "int32"),
                                    relax.const(int(zx.reshape(())), "int32"))
        conv = conv_op(ndim)(centred, relax.const(wq, "int8"), strides=[int(s) for s in attrs.strides],
                             padding=[int(p) for p in attrs.padding], dilation=[int(d) for d in attrs.dilation],
                             groups=int(attrs.groups), data_layout=attrs.data_layout,
                             kernel_layout=attrs.kernel_layout, out_layout=attrs.out_layout, out_dtype="int32")
        scale = (np.float32(sx.reshape(())) * np.broadcast_to(sw.astype(np.float32).reshape(-1), (out_channels,)))
        scale = scale.astype(np.float32).reshape((1, out_channels) + (1,) * ndim)
        self.taken += 1
        return relax.op.multiply(relax.op.astype(conv, "float32"), relax.const(scale, "float32"))


MODES = ("auto", "on", "off")


def wanted(mode: str, target) -> bool:
    """Whether ``mode`` (OptimizeOptions.integer_convs) takes integer convs for ``target``: "on" on any CPU
    target, "auto" where the CPU has a dot product for them (schedules/int8_tiles.py: VNNI, or pmaddwd on AVX2
    and AVX-512), "off" never."""
    if mode not in MODES:
        raise ValueError(f"integer_convs={mode!r} is not one of {MODES}")
    if mode == "off" or target is None or target.kind.name != "llvm":
        return False
    from atrous.pipeline.schedules.int8_tiles import dot_of

    return mode == "on" or dot_of(target).name != "loop"


@tvm.transform.module_pass(opt_level=0, name="IntegerConvs")
class IntegerConvs:
    """Dequantize -> conv patterns of a QDQ graph as integer convs (module docstring), on the targets ``mode``
    takes (``wanted``); no-op on float graphs."""

    def __init__(self, mode: str = "auto"):
        self.mode = mode

    def transform_module(self, mod, _ctx):
        if not wanted(self.mode, tvm.target.Target.current(allow_none=True)):
            return mod
        return _Rewriter(mod).transform()
