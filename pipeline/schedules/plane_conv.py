"""Default CPU schedule for reductions that stay within a channel plane: depthwise convs and pooling windows.

A depthwise conv reduces over a few taps of one channel, so there is no channel reduction to keep vector
registers busy, and ``ConvLike``'s row vectors took DeepLab's odd row lengths (129, 65, 33, 17: 43-, 13-, 11-
and 17-lane vectors) through slow generic code: 3-9 GFLOP/s on DeepLabV3-MobileNet, where tuning found
1.8x-7.6x. MetaSchedule's winners were plain loops with the padding computed close to its use. This schedule:

* one parallel task per (batch, channel) plane; the padded input plane is computed inside it, into a scratch
  buffer that stays in cache, instead of as a separate pass over the whole tensor;
* output rows accumulate in a row buffer with every tap unrolled, the epilogue (bias, activation) applied as
  the row is written; LLVM vectorises the row loops itself.

Measured on DeepLabV3-MobileNet's depthwise kernels alone (ms, this schedule vs ``ConvLike`` vs the best
MetaSchedule record of the committed database where known): 960ch 17x17 0.19 vs 0.64 (tuned 0.26), 32ch 129x129
0.26 vs 1.71 (tuned 0.25), 96ch 129 -> 65 stride 2 0.53 vs 2.24, 144ch 65x65 0.32 vs 0.87, 144ch 65 -> 33
stride 2 0.21 vs 1.13; the outputs are bit-identical (the same reduction order).

Taken: one reduction block over NC.. 4-D outputs (two spatial axes) with at most ``MAX_TAPS`` reduction
iterations (window size x channels per group), after ``PackedConv`` declined it.
"""

from __future__ import annotations

import math

from tvm import tirx

from atrous.pipeline.schedules.cpu import ReductionRule, _epilogue, _extent, _has_reads_padding, _iter_kinds

MAX_TAPS = 64  # reduction iterations unrolled per output (a 7x7 window, or 3x3 over 7 channels per group)
MAX_VECTOR = 64


class PlaneConv(ReductionRule):
    """Plane-parallel schedule with per-plane padding for small-window reductions (module docstring)."""

    def _schedule(self, sch, main, func, target):
        kinds = _iter_kinds(sch, main)
        loops = sch.get_loops(main)
        if len(loops) != len(kinds) or kinds[:4] != [tirx.IterVar.DataPar] * 4:
            return None
        spatial, reduce = loops[:4], loops[4:]
        if not reduce or any(k != tirx.IterVar.CommReduce for k in kinds[4:]):
            return None
        extents = [_extent(sch, r) for r in reduce]
        if None in extents or math.prod(extents) > MAX_TAPS:
            return None
        n, c, y, x = spatial
        for producer in sch.get_producers(main):  # copies and casts inlined; real padding is computed per plane
            if not _has_reads_padding(sch, producer):
                sch.compute_inline(producer)
        pads = [p for p in sch.get_producers(main) if _has_reads_padding(sch, p)]
        sch.reorder(n, c, y, x, *reduce)
        plane = sch.fuse(n, c)
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, y)
        for consumer in _epilogue(sch, acc):
            sch.reverse_compute_inline(consumer)
        for pad in pads:
            sch.compute_at(pad, plane)
            inner = sch.get_loops(pad)[-1]
            if (_extent(sch, inner) or MAX_VECTOR + 1) <= MAX_VECTOR:
                sch.vectorize(inner)
        for r in reduce:
            sch.unroll(r)
        sch.parallel(plane)
        sch.decompose_reduction(main, reduce[0])
        return sch
