"""Default CPU schedule for window reductions in the blocked channel layout: depthwise convs and pooling.

A depthwise conv (or a max/average pool) in ``NCHW{c}c`` reduces each lane over the taps of a small window, the
lanes being ``c`` different channels: there is no channel reduction, so every FMA needs an input vector of its
own, and the schedule's job is to keep the window's weight vectors and a row tile's accumulators in registers:

    parallel(batch, channel blocks, row runs) . rows . pixel tiles . taps . [pixels (unrolled) . lanes (vector)]

(a 1-D window of few channel blocks: parallel over runs of whole tiles of its one row instead of row runs).

The accumulators of ``pixels`` outputs stay in registers across the taps; the weight vector of a tap is loaded
once per tile and feeds ``pixels`` FMAs. The tile is as wide as the registers allow next to the window's weights
(isa.py); a last, shorter tile is peeled off the row at build time. A task's padded input rows are computed at
its start into scratch of its own (in cache), and the epilogue (bias, activation) is applied to the tile as it
is written back. Each output's taps are summed in the order the kernel writes them.
"""

from __future__ import annotations

import math

from tvm import tirx

from atrous.pipeline.schedules.cpu import TASKS_PER_CORE, ReductionRule, _epilogue, _extent, _iter_kinds, choose
from atrous.pipeline.schedules.isa import balanced, even_runs, isa_of

MAX_TAPS = 64  # window sizes unrolled in full (a 7x7 depthwise conv, an 8x8 pool)


class BlockedWindow(ReductionRule):
    """Register-tiled schedule of a blocked depthwise conv or pool (module docstring); tunable: the tile."""

    TUNABLE = True

    def _schedule(self, sch, main, func, target):
        kinds = _iter_kinds(sch, main)
        loops = sch.get_loops(main)
        spatial = [loop for loop, k in zip(loops, kinds) if k == tirx.IterVar.DataPar]
        reduce = [loop for loop, k in zip(loops, kinds) if k == tirx.IterVar.CommReduce]
        isa = isa_of(target)
        if (len(loops) != len(kinds) or len(spatial) not in (4, 5) or not reduce
                or kinds != [tirx.IterVar.DataPar] * len(spatial) + [tirx.IterVar.CommReduce] * len(reduce)
                or _extent(sch, spatial[-1]) != isa.lanes or not _is_window(sch, main)):
            return None
        taps = [_extent(sch, r) for r in reduce]
        width = _extent(sch, spatial[-2])
        if None in taps or not width or math.prod(taps) > MAX_TAPS:
            return None
        n, cb, *image, lanes = spatial
        planes = _extent(sch, n) * _extent(sch, cb)
        wanted = -(-TASKS_PER_CORE * int(target.attrs.get("num-cores", 1)) // planes)
        tiles = window_tiles(isa, width, math.prod(taps) if _reads_weights(sch, main) else 0)
        if len(image) == 1 and wanted > 1:  # one row per plane: its tiles are cut into runs (blocked_conv)
            tiles = _dividing_first(tiles, width)
        pixels = choose(sch, tiles, self.tunable)
        xo, xi = sch.split(image[-1], [None, pixels])
        # a task is a run of rows of one channel block (a whole plane when there are planes enough for every
        # core): its padded input rows are computed once into scratch of its own, allocated once per task
        if len(image) == 2:
            height = _extent(sch, image[0])
            chunks = min(height, wanted)
            rows = max(d for d in range(1, height // chunks + 1) if height % d == 0)  # runs that divide the rows
            yo, yi = sch.split(image[0], [None, rows])
            tasks, inner = sch.fuse(n, cb, yo), [yi]
        elif wanted > 1 and width % pixels == 0:  # a 1-D row: runs of whole tiles, as many tasks as wanted
            run, xo = sch.split(xo, [even_runs(width // pixels, wanted), None])
            tasks, inner = sch.fuse(n, cb, run), []
        else:
            tasks, inner = sch.fuse(n, cb), []
        sch.reorder(tasks, *inner, xo, *reduce, xi, lanes)
        for producer in sch.get_producers(main):  # a copy in place of padding is read directly
            if "if_then_else" not in str(sch.get(producer).body):
                sch.compute_inline(producer)
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, xo)
        for consumer in _epilogue(sch, acc):
            sch.reverse_compute_inline(consumer)
        sch.vectorize(lanes)
        sch.unroll(xi)
        *tile, vector = sch.get_loops(acc)[len(inner) + 2:]  # the write-back, below (tasks, rows, pixel tiles)
        sch.vectorize(vector)
        for loop in tile:
            sch.unroll(loop)
        sch.parallel(tasks)
        if width % pixels:
            sch.annotate(xo, "pragma_loop_partition_hint", 1)
        for producer in sch.get_producers(main):  # the padding: the rows this task reads
            sch.compute_at(producer, tasks)
            sch.vectorize(sch.get_loops(producer)[-1])
        sch.decompose_reduction(main, reduce[0])
        return sch


def window_tile(isa, width: int, weights: int) -> int:
    """Pixels per tile of a window reduction over rows of ``width`` with ``weights`` weight vectors (0 for a
    pool): the accumulators, the weights LLVM keeps in registers across tiles (at most half the register file)
    and an input vector must fit, with four to spare."""
    return balanced(width, _limit(isa, weights))


def window_tiles(isa, width: int, weights: int) -> list[int]:
    """The default tile first, then every smaller one (the tuner's choices)."""
    tiles = [window_tile(isa, width, weights)]
    for limit in range(1, _limit(isa, weights) + 1):
        if balanced(width, limit) not in tiles:
            tiles.append(balanced(width, limit))
    return tiles


def _dividing_first(tiles: list[int], width: int) -> list[int]:
    """``tiles`` with the largest one that divides ``width`` (at least half the default) moved to the front."""
    fits = [t for t in tiles if width % t == 0 and 2 * t >= tiles[0]]
    return tiles if not fits or fits[0] == tiles[0] else [max(fits)] + [t for t in tiles if t != max(fits)]


def _limit(isa, weights: int) -> int:
    return max(1, isa.registers - isa.reserved - 4 - min(weights, isa.registers // 2))


def _is_window(sch, main) -> bool:
    """Every read of the block indexes its lane axis by the block's own lane variable (no channel mixing)."""
    lane = sch.get(main).iter_vars[-1 - sum(1 for iv in sch.get(main).iter_vars
                                            if iv.iter_type == tirx.IterVar.CommReduce)].var
    return all(len(r.region) and r.region[-1].min.same_as(lane) for r in sch.get(main).reads)


def _reads_weights(sch, main) -> bool:
    """A depthwise conv reads two buffers (input and weight); a pool one."""
    return len(sch.get(main).reads) >= 2
