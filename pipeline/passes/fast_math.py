"""Legalization with vectorisable tanh and sigmoid on CPU targets (WaveNet's gated activations).

TVM lowers ``tanh`` and ``sigmoid`` on LLVM targets through ``exp``, and LLVM turns a vector ``exp`` into one
libm ``expf`` call per lane: a WaveNet gate spent more time in ``expf`` than in its convolution. TOPI ships
polynomial versions that vectorise: ``fast_tanh`` (a rational approximation, clamped for large inputs) and
``fast_exp`` (range reduction and a polynomial, exact at the ends of float range). Measured on 4M fp32 values on
this host: tanh 23.3 -> 1.4 ms, sigmoid 11.7 -> 2.2 ms; against float64 numpy, fast_tanh's largest error is
3.2e-7 absolute and relative, sigmoid as 1 / (1 + fast_exp(-x)) 2.4e-7 relative (TVM's own tanh: 8.9e-8
absolute, 2.5e-3 relative near zero). Not bit-exact, so verified like everything; other targets (CUDA, Vulkan)
have fast hardware ``tanh``/``exp`` and keep TVM's legalization.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, topi


def _sigmoid(x: te.Tensor) -> te.Tensor:
    e = topi.fast_exp(topi.negative(x))
    one = tvm.tirx.const(1, x.dtype)
    return te.compute(x.shape, lambda *i: one / (one + e(*i)), name="sigmoid", tag=topi.tag.ELEMWISE)


def _fp32_only(fast, stock):
    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x = call.args[0]
        return bb.call_te(fast if x.ty.dtype == "float32" else stock, x)

    return legalize


FAST = {"relax.tanh": _fp32_only(topi.fast_tanh, topi.tanh), "relax.sigmoid": _fp32_only(_sigmoid, topi.sigmoid)}


@tvm.transform.module_pass(opt_level=0, name="atrous.Legalize")
class Legalize:
    """``relax.transform.LegalizeOps`` with, on CPU (LLVM) targets, the blocked-layout convs
    (passes/blocked_kernels.py) and, if ``fast_math``, the fast tanh and sigmoid."""

    def __init__(self, fast_math: bool = True):
        self.fast_math = fast_math

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        from atrous.pipeline.passes.blocked_kernels import BLOCKED_LEGALIZE

        target = tvm.target.Target.current(allow_none=True)
        custom = None
        if target is not None and target.kind.name == "llvm":
            custom = {**BLOCKED_LEGALIZE, **(FAST if self.fast_math else {})}
        return relax.transform.LegalizeOps(custom)(mod)
