"""FLOPs of TIR kernels, by TVM's own count (a multiply-add is two), for per-task and per-kernel GFLOP/s.

The count is of the kernel as lowered, so a conv the dilation-aware passes rewrote counts the work it still does
(taps that only read padding are gone; tiles padded to whole registers are in), not the textbook conv's FLOPs.
"""

from __future__ import annotations

import tvm


def tir_flops(func) -> float:
    """FLOPs of one ``PrimFunc``, or of an IRModule holding one (0 for a kernel that only moves data)."""
    if isinstance(func, tvm.tirx.PrimFunc):
        func = tvm.IRModule({"main": func})
    return float(tvm.s_tir.analysis.estimate_tir_flops(func))


def kernel_flops(mod: tvm.IRModule) -> dict[str, float]:
    """{kernel name as the Relax VM calls it: FLOPs} for every TIR function of a lowered module."""
    return {gv.name_hint: tir_flops(func) for gv, func in mod.functions_items()
            if isinstance(func, tvm.tirx.PrimFunc)}
