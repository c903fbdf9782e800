"""What the rewrites here share: visiting each Relax function of a module, and recognising the convs they take."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator

# conv op -> (data layout, kernel layout, spatial axes) of the convs the rewrites understand
CONV_LAYOUTS = {"relax.nn.conv2d": ("NCHW", "OIHW", 2), "relax.nn.conv1d": ("NCW", "OIW", 1)}


def constant_conv(call) -> int | None:
    """The number of spatial axes of ``call`` if it is a conv in NC.../OI... layout over a constant weight."""
    layouts = CONV_LAYOUTS.get(getattr(call.op, "name", None))
    if layouts is None or (call.attrs.data_layout, call.attrs.kernel_layout) != layouts[:2]:
        return None
    return layouts[2] if isinstance(call.args[1], tvm.ir.expr.GenericConst) else None


def conv_op(ndim: int):
    return relax.op.nn.conv2d if ndim == 2 else relax.op.nn.conv1d


class ModuleRewriter(PyExprMutator):
    """Base of the rewrites' mutators (each decorated ``@mutator``, overriding ``visit_call_``): it keeps the
    module, and ``transform()`` returns it with every Relax function rewritten."""

    def __init__(self, mod):
        super().__init__(mod)
        self.mod = mod

    def transform(self):
        return rewrite_functions(self, self.mod)


def rewrite_functions(rewriter, mod):
    """``mod`` with every Relax function replaced by ``rewriter.visit_expr`` of it (TIR functions untouched)."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()
