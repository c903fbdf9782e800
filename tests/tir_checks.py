"""Checks on TensorIR as the build lowers it, shared by the schedule tests."""

import tvm


def update_loops(mod, target) -> tuple[int, int]:
    """(unchecked, bounds-checked) copies of the vectorised loops that update or write back the conv's
    accumulator, after the build's TIR lowering up to loop partitioning (checked: the body is an ``if`` on a
    pixel bound)."""
    from tvm import s_tir

    t = s_tir.transform
    passes = [t.LowerCrossThreadReduction(), t.LowerInitBlock(), t.PlanAndUpdateBufferAllocationLocation(),
              t.ConvertBlocksToOpaque(), t.CompactBufferAllocation(), t.LowerMatchBuffer(), t.StmtSimplify(),
              t.LowerOpaqueBlock(), tvm.tirx.transform.FlattenBuffer(), tvm.tirx.transform.NarrowDataType(32),
              t.LoopPartition()]
    kernel = tvm.IRModule({"main": mod["main"].with_attr("global_symbol", "main")})
    lowered = tvm.transform.Sequential(passes)(tvm.tirx.transform.BindTarget(target)(kernel))
    lines = [line.strip() for line in lowered["main"].script().splitlines()] + [""]
    checked = unchecked = 0
    for i, line in enumerate(lines[:-1]):
        if "in T.vectorized" not in line or "_init" in line:
            continue
        stores = [later for later in lines[i + 1:] if " = " in later][:1]  # the loop's first store
        if not stores or not any(f"_{scope}[" in stores[0] for scope in ("local", "global")):
            continue  # not the accumulator's
        body = lines[i + 1]
        if body.startswith("if ") and " < " in body:
            checked += 1
        else:
            unchecked += 1
    return unchecked, checked
