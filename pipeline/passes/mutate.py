"""What every module-wide rewrite here does: visit each Relax function with a PyExprMutator, keep the rest."""

from __future__ import annotations

from tvm import relax


def rewrite_functions(rewriter, mod):
    """``mod`` with every Relax function replaced by ``rewriter.visit_expr`` of it (TIR functions untouched)."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()
