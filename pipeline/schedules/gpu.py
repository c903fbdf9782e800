"""Default (untuned) GPU schedules: what a kernel gets on a CUDA (later Vulkan) target without a tuning record.

TVM's GPU pipeline has no convolution rule: dlight's ``Fallback`` gives a conv one thread per output element,
the accumulator in memory and the epilogue (bias, activation) as separate kernels. ``DirectConv`` takes the one
reduction block of a fused kernel (conv2d, depthwise, conv1d, any dilation; pooling):

* the zero-padding producer is inlined into the conv's reads, so no padded copy of the input is written;
* each thread owns ``F_TILE`` output channels of one output pixel, accumulated in registers (every input value
  loaded feeds ``F_TILE`` FMAs); threads of a warp take neighbouring pixels of one row, so input reads and output
  writes are coalesced;
* the epilogue is applied from registers as the tile is written.

Dead taps and output bands (passes/) have already removed the padding-only work before scheduling, on every
target. Kernels this rule declines fall to dlight's GPU rules (reductions, matmul, elementwise ``Fallback``).
Not measured on a GPU yet: no GPU was available while this was written (see BENCHMARKS.md).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from atrous.pipeline.schedules.cpu import _epilogue, _extent, _iter_kinds, _largest_divisor, reduction_block, tail

F_TILE = 4
THREADS = 128


class DirectConv(ScheduleRule):
    """One thread per (pixel, F_TILE channels), register accumulators, padding and epilogue fused."""

    def apply(self, func, target, tunable):
        found = reduction_block(func) if "gpu" in target.keys else None
        if found is None or tail(*found):  # blocks after a broadcast would be left unbound: dlight's rules take it
            return None
        sch, main = found
        try:
            return self._schedule(sch, main, int(target.attrs.get("max_num_threads", THREADS)))
        except s_tir.ScheduleError:
            return None

    def _schedule(self, sch, main, max_threads):
        kinds = _iter_kinds(sch, main)
        loops = sch.get_loops(main)
        spatial = [l for l, k in zip(loops, kinds) if k == tirx.IterVar.DataPar]
        reduce = [l for l, k in zip(loops, kinds) if k == tirx.IterVar.CommReduce]
        if len(loops) != len(kinds) or len(spatial) < 3 or kinds[:len(spatial)] != [tirx.IterVar.DataPar] * len(spatial):
            return None
        _inline_producers(sch, main)
        f = spatial[1]
        tile = []
        f_extent = _extent(sch, f)
        if f_extent and _largest_divisor(f_extent, F_TILE) > 1:
            fo, fi = sch.split(f, [None, _largest_divisor(f_extent, F_TILE)])
            spatial = [spatial[0], fo, *spatial[2:]]
            tile = [fi]
        sch.reorder(*spatial, *reduce, *tile)
        fused = sch.fuse(*spatial)
        # The register tile's write-back is placed under the fused loop *before* it is split into blocks and
        # threads, so the split's guard against the last block's spare threads covers the write-back as well
        # (placed under the thread loop afterwards, it would store past the rows unguarded).
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, fused)
        for consumer in _epilogue(sch, acc):
            sch.reverse_compute_inline(consumer)
        bx, tx = sch.split(fused, [None, min(THREADS, max_threads)])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        for fi in tile:
            sch.unroll(fi)
        if reduce:
            sch.decompose_reduction(main, reduce[0])
        return sch


def _inline_producers(sch, block) -> None:
    """Inline the whole producer chain (a transposed conv reads dilate -> pad -> conv): a stage left behind would
    run on the host, not bound to threads."""
    while True:
        producers = sch.get_producers(block)
        if not producers:
            return
        for producer in producers:
            sch.compute_inline(producer)
