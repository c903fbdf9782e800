"""Default CPU schedule for a dilated conv computed band by band in the blocked layout (blocked_kernels.banded).

The kernel holds one reduction block per band of outputs (each reading its run of live taps from the one shared
weight, with no padding) and an assembly block that puts the bands together. Each band gets the blocked dense
conv's register-tiled loop nest (blocked_conv.schedule_dense), in parallel over its rows, with the tile chosen
for its row width (sampled when tunable); the conv's epilogue (bias, activation) is applied by the assembly as it
writes each output vector.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from atrous.pipeline.passes.blocked_kernels import BAND, BANDS
from atrous.pipeline.schedules.blocked_conv import schedule_dense
from atrous.pipeline.schedules.cpu import _epilogue, _extent, _iter_kinds, _vectorize_inner, choose
from atrous.pipeline.schedules.isa import conv_tiles, isa_of


class BlockedBands(ScheduleRule):
    """Band by band register-tiled schedule of a banded blocked conv (module docstring); tunable: the tiles."""

    TUNABLE = True

    def apply(self, func, target, tunable, seed: int | None = None):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func, seed=seed)
        names = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if BANDS not in names:
            return None
        isa = isa_of(target)
        for name in names:
            if not name.startswith(BAND + "_"):
                continue
            block = sch.get_sblock(name)
            kinds = _iter_kinds(sch, block)
            loops = sch.get_loops(block)
            spatial = [loop for loop, k in zip(loops, kinds) if k == tirx.IterVar.DataPar]
            reduce = [loop for loop, k in zip(loops, kinds) if k == tirx.IterVar.CommReduce]
            n, kb, y, x, lanes = spatial
            tile = choose(sch, conv_tiles(isa, _extent(sch, x), _extent(sch, kb)), tunable)
            schedule_dense(sch, block, n, kb, [y, x], lanes, reduce, *tile)
        assembly = sch.get_sblock(BANDS)
        for consumer in _epilogue(sch, assembly):
            sch.reverse_compute_inline(consumer)
        _vectorize_inner(sch, assembly)
        return sch
