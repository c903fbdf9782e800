"""Default (untuned) CPU schedules: what a kernel gets when the tuning database has no record for it.

TVM's CPU pipeline compiles unscheduled TensorIR as written: one thread, scalar loops, the convolution's
accumulator in memory. These rules give every kernel a usable schedule with no tuning:

* ``ConvLike``: a block with reduction axes that ``PackedConv`` (packed_conv.py, tried first, for dense convs
  over constant weights) declined: depthwise and grouped convs, transposed convs, pooling means.
  Loops become ``parallel(n, f_outer, y) . reduce... . f_inner (unrolled) . x (vectorised)``: each thread owns
  output rows, the accumulator of ``F_TILE`` channels x one row lives in a local buffer the compiler keeps in
  registers, each input vector feeds ``F_TILE`` FMAs, and the epilogue (bias, activation, residual add) is
  applied as the row is written back. Zero padding stays a separate, parallel, vectorised pass.
* ``Elementwise``: everything else (resize, concat, adds): producers inlined, outer loops fused and parallel,
  the innermost vectorised.

Both are exact rewrites of the loop order, never of the arithmetic order within one output element's reduction
(up to floating-point reassociation by the vectoriser, which never reorders a reduction here).
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

F_TILE = 4  # output channels per register tile
MAX_VECTOR = 64  # widest row vectorised in one piece (longer rows are split)


# parallel tasks per core a kernel aims for when its natural parallel loop (channel blocks, rows) is too short:
# the blocked kernels then cut rows or columns into runs (a task per output row was measured 2x slower in a model
# than alone: its scratch row buffer was allocated per row)
TASKS_PER_CORE = 8


def _iter_kinds(sch, block) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _is_reduction(sch, block) -> bool:
    return any(kind == tirx.IterVar.CommReduce for kind in _iter_kinds(sch, block))


def _extent(sch, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _vectorize_inner(sch, block) -> None:
    """Parallel over all but the innermost loop, vectorise the innermost (split when it is long)."""
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    extent = _extent(sch, inner)
    if extent is None:
        return
    if extent > MAX_VECTOR:
        lanes = _largest_divisor(extent, MAX_VECTOR)
        if lanes < 4:  # a long row of prime length: parallel outer loops, the row a plain loop (no div/mod)
            return _parallel_outer(sch, loops[:-1])
        outer, inner = sch.split(inner, [None, lanes])
        loops = [*loops[:-1], outer]
    else:
        loops = loops[:-1]
    sch.vectorize(inner)
    _parallel_outer(sch, loops)


def _parallel_outer(sch, loops) -> None:
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops))
    elif loops:
        sch.parallel(loops[0])


def _inline_producers(sch, keep) -> None:
    """Inline every block that can be inlined into its consumers, except those in ``keep``."""
    for block in sch.get_child_blocks(sch.get_sblock("root")) if _has_root(sch) else []:
        if sch.get(block).name_hint in keep:
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except s_tir.ScheduleError:
        return False


def has_reduction(func) -> bool:
    """Whether any block of the kernel reduces (a conv, matmul or pooling; not a copy or elementwise kernel)."""
    sch = s_tir.Schedule(func)
    return any(_is_reduction(sch, b) for b in sch.get_child_blocks(sch.get_sblock("root")))


def reduction_block(func, seed: int | None = None):
    """(schedule, block) for a kernel with exactly one reduction block, else None: what the conv rules take.
    ``seed`` seeds the schedule's sampling (tunable rules; None: a fixed default)."""
    if not isinstance(func, tirx.PrimFunc):
        return None
    sch = s_tir.Schedule(func, seed=seed)
    reductions = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if _is_reduction(sch, b)]
    return (sch, reductions[0]) if len(reductions) == 1 else None


def single_reduction(func, target, seed: int | None = None):
    """``reduction_block`` for CPU (llvm) targets, side inputs of its epilogue inlined."""
    found = reduction_block(func, seed) if target.kind.name == "llvm" else None
    if found is not None:
        _inline_side_inputs(*found)
    return found


def _inline_side_inputs(sch, main) -> None:
    """Inline the elementwise blocks that feed the reduction's epilogue from other inputs (a residual branch's crop
    and bias add, which FuseOps fuses into the conv's kernel), so that the epilogue reads kernel inputs only and
    the rules can inline it into their write-back. Left in place, they made the rules decline the kernel: LinkNet's
    two strided shortcut convs ran at 1.5 GFLOP/s, 28 of its 106 ms."""
    chain = _epilogue(sch, main)
    own = {sch.get(b).name_hint for b in [main, *chain]}
    changed = True
    while changed:
        changed = False
        for block in chain:
            for producer in sch.get_producers(block):
                if sch.get(producer).name_hint in own:
                    continue
                try:
                    sch.compute_inline(producer)
                    changed = True
                except s_tir.ScheduleError:
                    pass


class ReductionRule(ScheduleRule):
    """A rule for the one reduction block of a fused CPU kernel: ``_schedule`` returns the schedule, or None to
    decline; a primitive that does not apply (ScheduleError) declines too. ``tunable``: the rule's choices are
    sampled (``choose``) with the schedule's random state, seeded by ``seed``, and recorded in its trace: the
    design space the tuner searches (tune.py); otherwise each choice is its default."""

    TUNABLE = False  # whether the rule has choices to sample

    def apply(self, func, target, tunable, seed: int | None = None):
        found = single_reduction(func, target, seed)
        if found is None:
            return None
        sch, main = found
        after = tail(sch, main)
        self.tunable = tunable
        try:
            scheduled = self._schedule(sch, main, func, target)
            if scheduled is not None and after:
                schedule_tail(scheduled, after)
            return scheduled
        except s_tir.ScheduleError:
            return None

    def _schedule(self, sch, main, func, target):
        raise NotImplementedError


def choose(sch, options: list, tunable: bool):
    """``options[0]`` (the default), or with ``tunable`` an option drawn uniformly by the schedule's sampler, so
    that the choice is a decision of its trace (replayed as recorded when a database record is applied)."""
    if not tunable or len(options) == 1:
        return options[0]
    decision = sch.sample_categorical(candidates=list(range(len(options))), probs=[1 / len(options)] * len(options))
    return options[int(sch.get(decision))]


class ConvLike(ReductionRule):
    """Register-tiled, row-vectorised, parallel schedule for the one reduction block of a fused kernel."""

    def _schedule(self, sch, main, func, target):
        kinds = _iter_kinds(sch, main)
        loops = sch.get_loops(main)
        if len(loops) != len(kinds):
            return None
        spatial = [l for l, k in zip(loops, kinds) if k == tirx.IterVar.DataPar]
        reduce = [l for l, k in zip(loops, kinds) if k == tirx.IterVar.CommReduce]
        if len(spatial) < 2 or kinds[: len(spatial)] != [tirx.IterVar.DataPar] * len(spatial):
            return None
        x = spatial[-1]
        if (_extent(sch, x) or 0) > MAX_VECTOR:
            xo, x = sch.split(x, [None, _largest_divisor(_extent(sch, x), MAX_VECTOR)])
            spatial = [*spatial[:-1], xo, x]
        # the channel axis: the one after the batch for NC... layouts (4-D conv2d, 3-D conv1d)
        f = spatial[1] if len(spatial) >= 3 else None
        outer = [l for l in spatial[:-1]]
        tile = []
        if f is not None and _extent(sch, f):
            fi_size = _largest_divisor(_extent(sch, f), F_TILE)
            if fi_size > 1:
                fo, fi = sch.split(f, [None, fi_size])
                outer = [fo if l == f else l for l in outer]
                tile = [fi]
        sch.reorder(*outer, *reduce, *tile, x)
        rows = sch.fuse(*outer)
        # producers other than padding are inlined; padding stays a separate vectorised pass
        for producer in sch.get_producers(main):
            if not _has_reads_padding(sch, producer):
                try:
                    sch.compute_inline(producer)
                except s_tir.ScheduleError:
                    pass
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, rows)
        for consumer in _epilogue(sch, acc):
            sch.reverse_compute_inline(consumer)
        # loop kinds first: vectorise/parallel need the complete reduction block, before its init is split off
        sch.vectorize(x)
        for fi in tile:
            sch.unroll(fi)
        sch.vectorize(sch.get_loops(acc)[-1])
        sch.parallel(rows)
        for producer in sch.get_producers(main):  # the padding passes left un-inlined above
            _vectorize_inner(sch, producer)
        if reduce:
            sch.decompose_reduction(main, reduce[0])  # the init keeps the vectorised/unrolled loop kinds
        return sch


def _has_reads_padding(sch, block) -> bool:
    """A padding pass that really pads (a pure copy, as for 1x1 convs, is inlined instead)."""
    return "pad" in sch.get(block).name_hint and "if_then_else" in str(sch.get(block).body)


def _epilogue(sch, block) -> list:
    """The chain of elementwise consumers after ``block``, nearest first: each the only consumer of the one before,
    none writing more elements than the block before it wrote. A broadcast ends the chain: FuseOps fuses a
    squeeze-excitation gate's ``x * w`` into the kernel computing ``w`` (a 1x1 map), and that consumer, looping
    over all of ``x``, cannot be inlined into the conv's write-back (TVM raised an InternalError there)."""
    chain = []
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1 or _written(sch, consumers[0]) > _written(sch, block):
            return chain
        block = consumers[0]
        chain.append(block)


def _written(sch, block) -> int:
    """Elements of the buffer ``block`` writes (its whole shape; non-constant shapes count as unbounded)."""
    shape = sch.get(block).writes[0].source.shape
    return math.prod(int(d) for d in shape) if all(isinstance(d, tirx.IntImm) for d in shape) else 1 << 62


def tail(sch, main) -> list[str]:
    """Names of the blocks after the reduction's epilogue chain (``_epilogue``), in order: what a conv rule
    leaves to ``schedule_tail``."""
    chain = _epilogue(sch, main)
    last = chain[-1] if chain else main
    names, pending = [], list(sch.get_consumers(last))
    while pending:
        block = pending.pop(0)
        name = sch.get(block).name_hint
        if name not in names:
            names.append(name)
            pending += sch.get_consumers(block)
    return names


def schedule_tail(sch, names: list[str]) -> None:
    """The blocks after a conv's epilogue as elementwise kernels: each inlined into its consumer where it can be,
    the rest parallel and vectorised."""
    for name in names[:-1]:
        try:
            sch.compute_inline(sch.get_sblock(name))
        except s_tir.ScheduleError:
            pass
    for name in names:
        try:
            block = sch.get_sblock(name)
        except s_tir.ScheduleError:  # inlined above
            continue
        _vectorize_inner(sch, block)


class Elementwise(ScheduleRule):
    """Inline producers, then parallel outer loops and a vectorised inner loop for each remaining block."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        try:
            _inline_producers(sch, keep=())
            for block in sch.get_child_blocks(sch.get_sblock("root")):
                if _is_reduction(sch, block):
                    return None
                _vectorize_inner(sch, block)
        except s_tir.ScheduleError:
            return None
        return sch
