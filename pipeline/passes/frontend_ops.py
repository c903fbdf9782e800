"""TensorIR kernels the ONNX importer emits for plain ops, turned back into those Relax ops.

TVM's ONNX frontend imports ``Clip`` (PyTorch's ReLU6 and hardtanh) as two ``call_tir`` kernels made from TOPI's
``maximum`` and ``minimum``, and ``Pad`` as a ``call_tir`` of TOPI's ``pad``. Later passes only see an opaque
kernel there: the blocked layout (blocked_layout.py) had to convert the tensor back to NCHW before every ReLU6 of
MobileNet and forward again after it (68 layout changes). This pass recognises exactly these kernels by their
TensorIR (one block computing ``max(x[i], c[])`` / ``min(x[i], c[])``, or ``x[i - before]`` inside the padded
region and a constant outside it) and writes the Relax op instead; a pad is replaced only if legalizing the op
gives back the same TensorIR.

It also gives one ONNX case TOPI cannot lower a definition it can: a Resize with ``align_corners`` to an output
of length 1 along an axis. ONNX (and ONNX Runtime) take source coordinate 0 there; TOPI's formula divides by
``length - 1`` and the build stopped with "Divide by zero" (found by the graph fuzzer). Such an axis is resized
to length 2 instead, whose first output also samples coordinate 0 exactly, and sliced back to its first element.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx
from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import ModuleRewriter

LOAD = tvm.ir.expr.TensorLoad  # a buffer load in TensorIR


def _single_block(func):
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    return sch.get(blocks[0]) if len(blocks) == 1 else None


def _own_load(load, block) -> bool:
    """``load`` reads its buffer at exactly the block's iteration variables, in order."""
    return (isinstance(load, LOAD) and len(load.indices) == len(block.iter_vars)
            and all(i.same_as(v.var) for i, v in zip(load.indices, block.iter_vars)))


def _extremum(func, args):
    """``relax.op.maximum``/``minimum`` for a kernel computing ``max(x[i], c[])`` (or ``min``), else None."""
    block = _single_block(func)
    value = block.body.value if block is not None and isinstance(block.body, tirx.BufferStore) else None
    op = {tirx.Max: relax.op.maximum, tirx.Min: relax.op.minimum}.get(type(value))
    if op is None or not _own_load(value.a, block) or not isinstance(value.b, LOAD) or value.b.indices:
        return None
    params = func.params[:2]  # TensorIR parameters are the buffers themselves
    if not (params[0].same_as(value.a.source) and params[1].same_as(value.b.source)):
        return None
    return op(args[0], args[1])


def _pad(func, args):
    """``relax.op.nn.pad`` for a kernel copying ``x[i - before]`` into a larger buffer, a constant elsewhere."""
    block = _single_block(func)
    value = block.body.value if block is not None and isinstance(block.body, tirx.BufferStore) else None
    if not (isinstance(value, tvm.ir.expr.Call) and getattr(value.op, "name", "") == "prim.if_then_else"):
        return None
    load, fill = value.args[1], value.args[2]
    if not isinstance(load, LOAD) or not isinstance(fill, tirx.FloatImm):
        return None
    analyzer = tvm.sym.Analyzer()
    before = []
    for index, iv in zip(load.indices, block.iter_vars):
        offset = analyzer.simplify(iv.var - index)
        if not isinstance(offset, tirx.IntImm):
            return None
        before.append(int(offset))
    shape_in = [int(d) for d in load.source.shape]
    shape_out = [int(iv.dom.extent) for iv in block.iter_vars]
    after = [o - i - b for o, i, b in zip(shape_out, shape_in, before)]
    if min(before + after) < 0:
        return None
    widths = [w for pair in zip(before, after) for w in pair]
    return relax.op.nn.pad(args[0], widths, pad_value=float(fill.value))


def _single_output_axes(call, data):
    """A resize2d with ``align_corners`` and static output length 1 on some image axes, of ``data``: the rewritten
    call, or None."""
    attrs = call.attrs
    size = call.args[1]
    if attrs.coordinate_transformation_mode != "align_corners" or not isinstance(size, relax.ShapeExpr):
        return None
    lengths = [int(v) if isinstance(v, tirx.IntImm) else None for v in size.values]
    if 1 not in lengths:
        return None
    layout = str(attrs.layout)
    axes = [layout.index(a) for a, n in zip("HW", lengths) if n == 1]
    wider = relax.op.image.resize2d(data, [2 if n == 1 else v for n, v in zip(lengths, size.values)],
                                    roi=[float(r) for r in attrs.roi], layout=layout, method=attrs.method,
                                    coordinate_transformation_mode="align_corners",
                                    rounding_method=attrs.rounding_method, cubic_alpha=float(attrs.cubic_alpha),
                                    cubic_exclude=int(attrs.cubic_exclude),
                                    extrapolation_value=float(attrs.extrapolation_value),
                                    out_dtype=attrs.out_dtype or None)
    return relax.op.strided_slice(wider, axes=axes, begin=[0] * len(axes), end=[1] * len(axes))


@mutator
class _Rewriter(ModuleRewriter):
    def visit_call_(self, call):
        if getattr(call.op, "name", None) == "relax.image.resize2d":
            rewritten = _single_output_axes(call, self.visit_expr(call.args[0]))
            if rewritten is not None:
                return rewritten
        if getattr(call.op, "name", None) == "relax.call_tir" and isinstance(call.args[0], tvm.ir.GlobalVar):
            func = self.mod[call.args[0]]
            args = [self.visit_expr(a) for a in call.args[1].fields] if isinstance(call.args[1], relax.Tuple) else None
            if isinstance(func, tirx.PrimFunc) and args and len(func.params) == len(args) + 1:
                op = _extremum(func, args) if len(args) == 2 else _pad(func, args) if len(args) == 1 else None
                if op is not None and self._same_kernel(op, func):
                    return op
        return super().visit_call_(call)

    def _same_kernel(self, op, func) -> bool:
        """A pad is kept only if legalizing it gives ``func`` back (max/min: matched exactly above)."""
        if op.op.name != "relax.nn.pad":
            return True
        bb = relax.BlockBuilder()
        source = func.params[0]
        params = [relax.Var("x", relax.TensorType([int(d) for d in source.shape], source.dtype))]
        with bb.function("main", params):
            with bb.dataflow():
                out = bb.emit_output(relax.op.nn.pad(params[0], [int(w) for w in op.attrs.pad_width],
                                                     pad_value=float(op.attrs.pad_value)))
            bb.emit_func_output(out)
        legal = relax.transform.LegalizeOps()(bb.get())
        kernels = [f for f in legal.functions.values() if isinstance(f, tirx.PrimFunc)]
        return len(kernels) == 1 and tvm_ffi.structural_equal(kernels[0], func, map_free_vars=True)


@tvm.transform.module_pass(opt_level=0, name="FrontendOps")
class FrontendOps:
    """Clip's max/min kernels and Pad's kernel from the ONNX importer as Relax ops (module docstring)."""

    def transform_module(self, mod, _ctx):
        return relax.transform.DeadCodeElimination()(_Rewriter(mod).transform())
