"""Channels-last activations across the integer parts of a QDQ graph (CPU targets).

The int8 kernels (int8_kernels.py) take four channels of one pixel per dot product and write sixteen channels of
one pixel per vector: in NCHW both are a plane apart (a packing pass before each conv, a channel-by-channel
write-back after it), in NHWC both are contiguous. So, as ONNX Runtime does for its int8 convs, the integer
convs go channels-last and the ops between them follow:

1. per-tensor ``quantize``/``dequantize`` become the elementwise arithmetic they stand for, as TVM legalizes
   them (``round(x / s) + z`` clamped to the 8-bit range and cast; ``(q - z) * s``), because Relax's layout
   conversion knows elementwise ops but not these two (it put a transpose on either side of each). Where
   ``x`` is an integer conv's scaled sums, ``x / s`` is one multiply of the sums by the combined scale, as ONNX
   Runtime requantizes (and no division in the kernel's epilogue);
2. TVM's own ``ConvertLayout`` turns every integer ``conv2d`` to NHWC/OHWI and carries the layout through the
   ops after it (elementwise ops and their constants, pools, means, concatenations), transposing back only where
   an op needs NCHW (float convs, resizes, and the graph's outputs).

Exact: the same arithmetic in another layout. Graphs without integer convs are left alone (the fp32 path keeps
its blocked layout, blocked_layout.py).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import ModuleRewriter


def _op(expr) -> str | None:
    return getattr(getattr(expr, "op", None), "name", None)


def _scalar(expr):
    if not isinstance(expr, tvm.ir.expr.GenericConst):
        return None
    value = expr.value.numpy()
    return value.reshape(()) if value.size == 1 else None


@mutator
class _Arithmetic(ModuleRewriter):
    def visit_call_(self, call):
        name = _op(call)
        if name in ("relax.quantize", "relax.dequantize"):
            scale, zero = _scalar(call.args[1]), _scalar(call.args[2])
            if scale is not None and zero is not None:
                data = self.visit_expr(call.args[0])
                if name == "relax.quantize" and call.attrs.out_dtype in ("uint8", "int8"):
                    return _quantize(self._requantized(data, scale), scale, zero, call.attrs.out_dtype)
                if name == "relax.dequantize" and call.attrs.out_dtype == "float32" and data.ty.dtype in ("uint8",
                                                                                                         "int8"):
                    return _dequantize(data, scale, zero)
        return super().visit_call_(call)

    def _requantized(self, data, scale):
        """``data / scale`` where ``data`` is ``astype(sums, float32) * s`` over an integer conv's int32 sums
        (integer_convs.py): ``astype(sums) * (s / scale)``, one multiply by the combined scale, as ONNX Runtime's
        int8 convs requantize (its multiplier is float32 ``sx * sw / sy`` too); else ``data / scale``."""
        value = self.lookup_binding(data) if isinstance(data, relax.Var) else None
        if _op(value) == "relax.multiply" and isinstance(value.args[1], tvm.ir.expr.GenericConst):
            cast = self.lookup_binding(value.args[0]) if isinstance(value.args[0], relax.Var) else None
            if _op(cast) == "relax.astype" and cast.args[0].ty.dtype == "int32":
                combined = (value.args[1].value.numpy().astype(np.float32) / np.float32(scale)).astype(np.float32)
                return relax.op.multiply(value.args[0], relax.const(combined, "float32"))
        return relax.op.divide(data, relax.const(float(scale), "float32"))


def _quantize(scaled, scale, zero, dtype: str):
    """``scaled``: the input already divided by ``scale`` (_Arithmetic._requantized)."""
    info = np.iinfo(dtype)
    shifted = relax.op.add(relax.op.round(scaled), relax.const(float(zero), "float32"))
    # max/min with constants, not clip: Relax's layout conversion carries binary ops through, not clip
    low = relax.op.maximum(shifted, relax.const(float(info.min), "float32"))
    return relax.op.astype(relax.op.minimum(low, relax.const(float(info.max), "float32")), dtype)


def _dequantize(data, scale, zero):
    centred = relax.op.subtract(relax.op.astype(data, "int32"), relax.const(int(zero), "int32"))
    return relax.op.multiply(relax.op.astype(centred, "float32"), relax.const(float(scale), "float32"))


def has_integer_convs(mod) -> bool:
    """Whether any conv of the module's Relax functions sums in int32 (integer_convs.py made it)."""
    found = []

    def visit(expr):
        if _op(expr) in ("relax.nn.conv2d", "relax.nn.conv1d") and expr.attrs.out_dtype == "int32":
            found.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


@tvm.transform.module_pass(opt_level=0, name="Int8ChannelsLast")
class Int8ChannelsLast:
    """The module docstring's two steps, on CPU targets, for modules with integer convs."""

    def transform_module(self, mod, _ctx):
        target = tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "llvm" or not has_integer_convs(mod):
            return mod
        mod = _Arithmetic(mod).transform()
        return relax.transform.ConvertLayout({}, _desired_layout)(mod)


def _desired_layout(call) -> dict:
    """ConvertLayout's per-call choice: integer convs channels-last; float convs (a QDQ graph's unquantized ones,
    transposed convs made dense by transposed_phases.py) stay NCHW for the fp32 blocked kernels (in NHWC they
    got TVM's generic ones: LinkNet's int8 build ran 3.7x slower than its fp32 one); resizes NCHW (an NCHW
    transpose of their small input instead): separable_resize.py's form of them."""
    name = call.op.name
    if name == "relax.nn.conv2d":
        return {name: ["NHWC", "OHWI"]} if call.attrs.out_dtype == "int32" else {name: ["NCHW", "OIHW"]}
    if name == "relax.image.resize2d":
        return {name: ["NCHW"]}
    return {}
