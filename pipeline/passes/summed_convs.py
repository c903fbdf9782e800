"""A sum of 1x1 convs over different inputs as one conv over their concatenation (WaveNet's skip connections).

WaveNet adds every residual layer's 1x1 skip conv into one running sum: 30 convs of 32 -> 256 channels over 16000
samples, each writing 256 x 16000 outputs and the sum reading and writing them again, for 64 multiply-adds per
output. Those kernels were 47% of WaveNet's time at ~40 GFLOP/s, bound by memory, not arithmetic. The sum is
linear: ``sum_l W_l z_l + b_l = [W_1 .. W_n] [z_1; ..; z_n] + sum_l b_l``, one conv with a 960-channel reduction
over the concatenated inputs, which writes its output once. The same products, summed in another order (not
bit-exact).

Taken: an expression tree of ``add``s (each intermediate sum used only there) with at least ``MIN_CONVS`` leaves
that are 1x1 convs (conv1d or conv2d, NC.. layouts, stride and dilation 1, no padding, groups 1, constant float32
weight), optionally plus a constant bias, with the same output shape, each used only by the sum. Other leaves
stay terms of the sum.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes.mutate import ModuleRewriter, constant_conv, conv_op

# The concatenation is one more copy of every input: fold only where it saves at least two output passes.
MIN_CONVS = 3


def _op(expr) -> str | None:
    return getattr(getattr(expr, "op", None), "name", None)


def _pointwise(call) -> bool:
    ndim = constant_conv(call) if isinstance(call, relax.Call) else None
    if ndim is None:
        return False
    attrs, kernel = call.attrs, call.args[1].ty  # the weight's type: no copy of its values to read its shape
    return ([int(d) for d in kernel.shape.values[2:]] == [1] * ndim and int(attrs.groups) == 1
            and kernel.dtype == "float32"
            and all(int(s) == 1 for s in attrs.strides) and all(int(d) == 1 for d in attrs.dilation)
            and all(int(p) == 0 for p in attrs.padding) and (attrs.out_dtype or "float32") == "float32")


def _bindings_and_uses(mod):
    """{var: bound value} and {var: number of uses} over every Relax function of ``mod``."""
    bound, uses = {}, {}

    def count(expr):
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1
        elif isinstance(expr, relax.Call):
            for arg in expr.args:
                count(arg)
        elif isinstance(expr, relax.Tuple):
            for field in expr.fields:
                count(field)

    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        for block in func.body.blocks:
            for binding in block.bindings:
                bound[binding.var] = binding.value
                count(binding.value)
        count(func.body.body)
    return bound, uses


@mutator
class _Rewriter(ModuleRewriter):
    def __init__(self, mod):
        super().__init__(mod)
        self.bound, self.uses = _bindings_and_uses(mod)
        inner = {arg for value in self.bound.values() if _op(value) == "relax.add" for arg in value.args
                 if self._internal(arg)}
        self.roots = [value for var, value in self.bound.items() if _op(value) == "relax.add" and var not in inner]

    def _internal(self, expr) -> bool:
        return isinstance(expr, relax.Var) and self.uses.get(expr) == 1 and _op(self.bound.get(expr)) == "relax.add"

    def _terms(self, expr) -> list:
        """The leaves of the sum ``expr`` stands for (itself, unless it is an intermediate sum)."""
        if self._internal(expr):
            return [t for arg in self.bound[expr].args for t in self._terms(arg)]
        return [expr]

    def _constant(self, term) -> np.ndarray | None:
        """The value of ``term`` if it is a constant (or a variable bound to one): a bias."""
        value = self.bound.get(term, term) if isinstance(term, relax.Var) else term
        return value.value.numpy() if isinstance(value, tvm.ir.expr.GenericConst) else None

    def _conv_term(self, term):
        """(conv call, bias array or None) if ``term`` is a 1x1 conv (+ constant bias) used only by the sum."""
        if not isinstance(term, relax.Var) or self.uses.get(term) != 1:
            return None
        value = self.bound.get(term)
        if _pointwise(value):
            return value, None
        if _op(value) == "relax.add" and self._constant(value.args[1]) is not None:
            conv = value.args[0]
            if isinstance(conv, relax.Var) and self.uses.get(conv) == 1 and _pointwise(self.bound.get(conv)):
                return self.bound[conv], self._constant(value.args[1])
        return None

    def visit_call_(self, call):
        if not any(call.same_as(root) for root in self.roots):
            return super().visit_call_(call)
        terms = [t for arg in call.args for t in self._terms(arg)]
        groups: dict[tuple, list] = {}
        others, constants = [], []
        for term in terms:
            found = self._conv_term(term)
            if found is None:
                constant = self._constant(term)
                (others if constant is None else constants).append(term if constant is None else constant)
                continue
            conv, _ = found
            key = (_op(conv), tuple(int(d) for d in conv.ty.shape.values))
            groups.setdefault(key, []).append(found)
        if not any(len(g) >= MIN_CONVS for g in groups.values()):
            return super().visit_call_(call)
        parts = []
        for group in groups.values():
            if len(group) < MIN_CONVS:
                parts += [self.visit_expr(c) if b is None else relax.op.add(self.visit_expr(c), relax.const(b))
                          for c, b in group]
                continue
            parts.append(self._merge(group))
        if constants:  # biases: one constant, summed here
            bias = constants[0].astype(np.float64)
            for constant in constants[1:]:
                bias = bias + constant
            others.append(relax.const(bias.astype(np.float32)))
        total = None
        for part in parts + [t if isinstance(t, tvm.ir.expr.GenericConst) else self.visit_expr(t) for t in others]:
            total = part if total is None else relax.op.add(self.builder_.emit(total), part)
        return total

    def _merge(self, group) -> relax.Expr:
        emit = self.builder_.emit
        convs = [c for c, _ in group]
        ndim = len(convs[0].ty.shape.values) - 2
        inputs = emit(relax.op.concat([self.visit_expr(c.args[0]) for c in convs], axis=1))
        weight = np.concatenate([c.args[1].value.numpy() for c in convs], axis=1)
        out = conv_op(ndim)(inputs, relax.const(weight), data_layout=convs[0].attrs.data_layout,
                            kernel_layout=convs[0].attrs.kernel_layout)
        biases = [np.broadcast_to(b, (1, weight.shape[0]) + (1,) * ndim) for _, b in group if b is not None]
        if not biases:
            return out
        return relax.op.add(emit(out), relax.const(np.sum(biases, axis=0, dtype=np.float64).astype(np.float32)))


@tvm.transform.module_pass(opt_level=0, name="MergeSummedConvs")
class MergeSummedConvs:
    """Sums of 1x1 convs over different inputs as one conv over the concatenated inputs (module docstring)."""

    def transform_module(self, mod, _ctx):
        return relax.transform.DeadCodeElimination()(_Rewriter(mod).transform())
