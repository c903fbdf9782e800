"""Default CPU schedule for dense convs in the blocked channel layout (passes/blocked_kernels.py).

In ``NCHW{c}c`` with ``c`` one vector, a conv is a register-blocked product, as in oneDNN's and ONNX Runtime's
NCHWc kernels: a tile of ``pixels`` neighbouring outputs x ``vectors`` channel vectors accumulates in registers;
per input channel each pixel's input value is broadcast once and feeds ``vectors`` FMAs, each weight vector
feeds ``pixels``. The loops, outermost first::

    parallel(batch, output channel tiles, rows[, column runs]) . pixel tiles . input blocks . taps . input lanes
        . [pixels (unrolled) . channel vectors (unrolled) . lanes (vectorised)]

* the tile comes from the ISA (isa.py: as many accumulators as the register file holds, evened out over the
  row); with ``tunable`` it is a sampled decision among every tile that fits (isa.conv_tiles), which is the
  design space ``atrous tune`` searches;
* the input lanes stay a loop: LLVM unrolls it itself; unrolled in TVM too, LLVM hoisted every broadcast of
  the body and spilled them (shared/examples/nchwc-conv: 69% of peak instead of ~100%);
* a row the tile does not divide gets its last, shorter tile peeled off at build time
  (``pragma_loop_partition_hint``), so no tile carries a bounds check (with one, LLVM keeps the accumulators in
  memory);
* when batch x channel tiles x rows give the cores too few tasks (a conv1d of 32 channels is one or two channel
  tiles and no rows), a row's tiles are cut into runs that are tasks of their own, with a tile that divides the
  row (plan_dense);
* the epilogue (bias, activation, residual, a gate) is applied to the tile in registers as it is written back,
  whole vectors of channels at a time; zero padding is its own parallel, vectorised pass before the conv.

The sum of each output runs over input blocks, taps and lanes in the order the kernel writes it.
"""

from __future__ import annotations

import math

from tvm import tirx

from atrous.pipeline.schedules.cpu import (TASKS_PER_CORE, ReductionRule, _epilogue, _extent, _iter_kinds,
                                           _vectorize_inner, choose)
from atrous.pipeline.schedules.isa import conv_tiles, even_runs, isa_of

DENSE = ("conv2d_nchwc", "conv1d_nchwc", "winograd_product")  # the last: blocked Winograd's products


class BlockedConv(ReductionRule):
    """Register-tiled schedule of a blocked dense conv (module docstring); tunable: the tile."""

    TUNABLE = True

    def _schedule(self, sch, main, func, target):
        if sch.get(main).name_hint not in DENSE:
            return None
        kinds = _iter_kinds(sch, main)
        loops = sch.get_loops(main)
        spatial = [loop for loop, k in zip(loops, kinds) if k == tirx.IterVar.DataPar]
        reduce = [loop for loop, k in zip(loops, kinds) if k == tirx.IterVar.CommReduce]
        if len(spatial) not in (4, 5) or len(loops) != len(kinds):
            return None
        n, kb, *image, lanes = spatial
        width, blocks = _extent(sch, image[-1]), _extent(sch, kb)
        if not width or not blocks:
            return None
        tasks = _extent(sch, n) * math.prod(_extent(sch, row) for row in image[:-1])
        cores = int(target.attrs.get("num-cores", 1))
        pixels, vectors, runs = choose(sch, plan_dense(isa_of(target), width, blocks, tasks, cores), self.tunable)
        return schedule_dense(sch, main, n, kb, image, lanes, reduce, pixels, vectors, runs)


def plan_dense(isa, width: int, blocks: int, tasks: int, cores: int) -> list[tuple[int, int, int]]:
    """(pixels, channel vectors, column runs) of each tile that fits (isa.conv_tiles) for a conv whose rows are
    ``width`` pixels, ``blocks`` channel vectors, and ``tasks`` (batch x rows) to run in parallel besides the
    channel tiles. Where channel tiles x ``tasks`` leave cores idle (a conv1d of 32 channels: one or two tasks),
    the row's whole tiles are cut into runs, ``TASKS_PER_CORE`` per core, when the tile divides the row (a run
    must end on a whole tile: the peeled last tile of runs cut from one row would write into the next run). The
    default, first, is the tile of two or more channel vectors (isa.conv_tile says why) that keeps the most
    accumulators busy on the most cores (accumulators x min(parallel tasks, cores)); on a tie the ISA's
    default tile."""
    plans, scores = [], []
    for pixels, vectors in conv_tiles(isa, width, blocks):
        parallel = tasks * (blocks // vectors)
        tiles = width // pixels if width % pixels == 0 else 0
        runs = even_runs(tiles, -(-TASKS_PER_CORE * cores // parallel)) if tiles else 1
        plans.append((pixels, vectors, runs))
        scores.append((vectors > 1, pixels * vectors * min(parallel * runs, cores)))
    best = plans[scores.index(max(scores))]  # the first of equals: the ISA's default tile on a tie
    return [best] + [p for p in plans if p != best]


def schedule_dense(sch, main, n, kb, image, lanes, reduce, pixels: int, vectors: int, runs: int = 1):
    """The loop nest of the module docstring for one tile; ``image`` is (rows, columns) or (columns,)."""
    width = _extent(sch, image[-1])
    kbo, kbi = sch.split(kb, [None, vectors])
    xo, xi = sch.split(image[-1], [None, pixels])
    rows = [n, kbo, *image[:-1]]
    if runs > 1:  # whole tiles only (plan_dense): a run's last tile must not be a partial one
        run, xo = sch.split(xo, [runs, None])
        rows.append(run)
    sch.reorder(*rows, xo, *reduce, xi, kbi, lanes)
    outer = sch.fuse(*rows)
    for producer in sch.get_producers(main):  # a copy in place of padding (a 1x1 conv) is read directly
        if "if_then_else" not in str(sch.get(producer).body):
            sch.compute_inline(producer)
    acc = sch.cache_write(main, 0, "local")
    sch.reverse_compute_at(acc, xo)
    for consumer in _epilogue(sch, acc):
        sch.reverse_compute_inline(consumer)
    sch.vectorize(lanes)
    sch.unroll(kbi)
    sch.unroll(xi)
    *tile, vector = sch.get_loops(acc)[2:]  # the write-back under (rows, pixel tiles)
    sch.vectorize(vector)
    for loop in tile:
        sch.unroll(loop)
    sch.parallel(outer)
    if width % pixels:
        sch.annotate(xo, "pragma_loop_partition_hint", 1)
    for producer in sch.get_producers(main):  # the padding pass
        _vectorize_inner(sch, producer)
    sch.decompose_reduction(main, reduce[0])
    return sch
