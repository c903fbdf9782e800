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


def kernel_flops(mod: tvm.IRModule, unscheduled: tvm.IRModule | None = None) -> dict[str, float]:
    """{kernel name as the Relax VM calls it: FLOPs} for every TIR function of a lowered module. TVM's counter
    cannot read tensorized code (an LLVM intrinsic on vectors: the int8 dot products of schedules/int8_conv.py);
    such a kernel is counted as it was before scheduling, from ``unscheduled`` (the same names), else as 0."""
    counts = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        try:
            counts[gv.name_hint] = tir_flops(func)
        except tvm.error.InternalError:
            before = _function(unscheduled, gv.name_hint)
            counts[gv.name_hint] = tir_flops(before) if before is not None else 0.0
    return counts


def _function(mod, name: str):
    if mod is None:
        return None
    return next((f for gv, f in mod.functions_items() if gv.name_hint == name), None)
