"""int32 indices for CPU kernels, before they are scheduled.

The CPU schedules peel the last, shorter tile off a loop at build time (``pragma_loop_partition_hint``:
BlockedConv, BlockedWindow, PixelConv), so that no other tile carries a bounds check. TVM 0.27's NarrowDataType
runs first in the build and renames the hinted loop's variable (int64 -> int32), leaving the hint naming the old
one: LoopPartition then skips the loop silently and every tile keeps its check (measured 7-15x slower). So CPU
kernels are narrowed to int32 when lowering, before scheduling: tuning tasks, default schedules and database
records all see the same function. A kernel with a buffer of 2^31 elements or more, or with int64 data, keeps
int64 indices.
"""

from __future__ import annotations

import math

import tvm
from tvm import tirx

INT32_ELEMENTS = 1 << 31


def narrowed(func: tirx.PrimFunc) -> tirx.PrimFunc:
    return tirx.transform.ForceNarrowIndexToInt32()(tvm.IRModule({"main": func}))["main"]


def fits_int32(func: tirx.PrimFunc) -> bool:
    """Every parameter has static dimensions and fewer than 2^31 elements, and none holds int64 data (a gather's
    indices: ForceNarrowIndexToInt32 refuses those, found by the graph fuzzer)."""
    for buffer in func.params:
        if str(getattr(buffer, "dtype", "")) == "int64":
            return False
        shape = getattr(buffer, "shape", None)
        if shape is None or not all(isinstance(d, tirx.IntImm) for d in shape):
            return False
        if math.prod(int(d) for d in shape) >= INT32_ELEMENTS:
            return False
    return True


@tvm.transform.module_pass(opt_level=0, name="NarrowCPUKernels")
class NarrowCPUKernels:
    """On CPU targets, int32 indices for every kernel whose buffers allow them (module docstring)."""

    def transform_module(self, mod, _ctx):
        target = tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "llvm":
            return mod
        updated = {gv: narrowed(f) for gv, f in mod.functions_items()
                   if isinstance(f, tirx.PrimFunc) and fits_int32(f)}
        if not updated:
            return mod
        functions = dict(mod.functions_items())
        functions.update(updated)
        return tvm.IRModule(functions, attrs=mod.attrs)
