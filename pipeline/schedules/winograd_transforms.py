"""Default CPU schedule for the Winograd transforms of blocked convs (passes/blocked_winograd.py).

Both transforms are written as one select over the position (input) or the output's offset in its tile
(output), each branch a short sum with constant coefficients. The schedule puts that index on a loop of its own,
unrolled, so that every branch is resolved when the build simplifies the unrolled copies: what runs is
straight-line code, vectorised over the block's lanes, in parallel over channel blocks and tiles.

* input: ``parallel(channel block, tile) . position (unrolled) . lanes (vector)``, the zero padding computed
  first by its own parallel pass; LLVM loads each input pixel of a tile once for all positions;
* output: ``parallel(batch, channel block, tile rows) . tile columns . row offset, column offset (unrolled) .
  lanes (vector)``, rows and columns split at the tile size (times the rate: the offsets are then constants);
  the conv's epilogue (bias, activation, residual) is applied as each output vector is written.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.base import ScheduleRule

from atrous.pipeline.schedules.cpu import _epilogue, _extent, _vectorize_inner

# the block names of passes/blocked_winograd.py's kernels, and the output block's annotation: the period (m x rate)
# of an output's offset in its tile, along rows and columns
INPUT, PRODUCT, OUTPUT = "winograd_input", "winograd_product", "winograd_output"
STEP = "atrous.winograd_step"


class WinogradTransforms(ScheduleRule):
    """Unrolled, vectorised schedules of the blocked Winograd input and output transforms (module docstring)."""

    def apply(self, func, target, tunable):
        if target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if INPUT in blocks:
            return _input(sch, blocks[INPUT])
        if OUTPUT in blocks:
            step = sch.get(blocks[OUTPUT]).annotations.get(STEP)
            return _output(sch, blocks[OUTPUT], [int(s) for s in step]) if step is not None else None
        return None


def _input(sch, block):
    position, blocks, row, tile, lanes = sch.get_loops(block)
    sch.reorder(blocks, row, tile, position, lanes)
    sch.parallel(sch.fuse(blocks, row, tile))
    sch.unroll(position)
    sch.vectorize(lanes)
    for producer in sch.get_producers(block):  # the zero padding
        _vectorize_inner(sch, producer)
    return sch


def _output(sch, block, step: list[int]):
    """``step``: (m x rate rows, m x rate columns), the period of the output's offsets in their tiles."""
    for consumer in _epilogue(sch, block):
        sch.reverse_compute_inline(consumer)
    n, blocks, y, x, lanes = sch.get_loops(block)
    width = _extent(sch, x)
    yo, yi = sch.split(y, [None, step[0]])
    xo, xi = sch.split(x, [None, step[1]])
    sch.reorder(n, blocks, yo, xo, yi, xi, lanes)
    sch.parallel(sch.fuse(n, blocks, yo))
    sch.unroll(yi)
    sch.unroll(xi)
    sch.vectorize(lanes)
    if width % step[1]:  # the last tile column only checks its bounds (rows: one check per row, in the branch)
        sch.annotate(xo, "pragma_loop_partition_hint", 1)
    return sch
