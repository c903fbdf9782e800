"""Default CPU schedule for dense convolutions: output channels in vector registers, weights packed at compile time.

For a convolution that reduces over input channels (conv2d/conv1d, any dilation or stride, groups = 1), the
row-vectorised ``ConvLike`` schedule is limited by the row width, and DeepLab's 2^k+1 feature maps (65, 33, 17)
make every row an odd length. This schedule vectorises over output channels instead, as the NCHWc kernels of
ONNX Runtime and oneDNN do:

* the weight is re-laid out once, at compile time, from ``O I kh kw`` to ``O/F I kh kw F`` (a layout-rewrite
  block that ``SplitLayoutRewritePreproc`` + ``FoldConstant`` turn into packed constants), so the ``F`` output
  channels of one tap are one contiguous vector load;
* a register tile of ``X`` output pixels x ``F`` channels (``register_tile``) accumulates in a local buffer meant
  to live in registers; every input value is broadcast once and feeds ``F / lanes`` FMAs, every weight vector
  ``X``. (Measured: on AVX2, LLVM still moves part of the tile through the stack, so these kernels reach 20-40
  GFLOP/s on 2 cores, well below peak; fixing that is the next step.)
* output rows (batch x channel blocks x rows) run in parallel; bias, activation and residual adds are applied as
  the tile is written back.

The arithmetic of each output element (its reduction order) is unchanged.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import codegen

from atrous.pipeline.schedules.cpu import (ReductionRule, _epilogue, _extent, _has_reads_padding, _iter_kinds,
                                           _vectorize_inner)

MAX_X_TILE = 6
MAX_F_VECTORS = 4
MIN_IN_CHANNELS = 2  # depthwise convs (one input channel per output) vectorise rows instead (ConvLike)

_LAYOUT_REWRITE = "meta_schedule.layout_rewrite_preproc"


def vector_lanes(target) -> int:
    """fp32 lanes of the target's widest vector unit (AVX-512: 16, AVX/AVX2: 8, NEON and others: 4)."""
    if target.kind.name != "llvm":
        return 4
    if codegen.llvm_cpu_has_features("avx512f", target):
        return 16
    if codegen.llvm_cpu_has_features("avx", target):
        return 8
    return 4


def _layout_free_names(func) -> set[str]:
    """Names of the parameters the graph marked layout-free (constant weights): only those can be packed."""
    indices = func.attrs.get("layout_free_buffers", []) if func.attrs else []
    return {func.params[int(i)].name for i in indices}


def _weight_read(sch, block, f_var, rc_var, packable: set[str]):
    """Index of the constant read indexed ``[f, rc, ...]`` by plain iteration variables (the conv weight).

    A weight computed inside the kernel (a transposed conv's flipped kernel) is not a constant and is left alone.
    """
    for index, region in enumerate(sch.get(block).reads):
        starts = [r.min for r in region.region]
        if (region.source.name in packable and len(starts) >= 3
                and starts[0].same_as(f_var) and starts[1].same_as(rc_var)):
            return index
    return None


def register_tile(width: int | None, channels: int, lanes: int, registers: int = 16) -> tuple[int, int] | None:
    """(output pixels, output channels) of the accumulator tile, or None when channels do not fill a vector.

    The pixel count divides the row exactly (``width`` None: the best tile for a row of any length): a bounds check inside the tile stops LLVM from keeping the
    accumulators in registers (measured 5-9x slower on 17- and 33-wide rows). The tile must fit the register file
    with its operands: ``pixels x vectors`` accumulators, ``vectors`` weight loads and a broadcast input (x86
    with AVX2 has 16 vector registers; a tile of 3 x 4 vectors spilled to the stack). Among the tiles that fit,
    the one with the most FMAs per loaded value wins.
    """
    best = None
    for vectors in (v for v in (1, 2, 4) if v <= MAX_F_VECTORS):  # <3 x 8 x float> legalises badly
        if channels % (vectors * lanes):
            continue
        for pixels in range(1, min(MAX_X_TILE, width or MAX_X_TILE) + 1):
            if (width and width % pixels) or pixels * vectors + vectors + 2 > registers:
                continue
            if best is None or pixels * vectors > best[0] * best[1] // lanes:
                best = (pixels, vectors * lanes)
    return best


def vector_registers(target) -> int:
    """Architectural vector registers: 32 with AVX-512 or on AArch64, else 16."""
    if codegen.llvm_cpu_has_features("avx512f", target) or "aarch64" in str(target.attrs.get("mtriple", "")):
        return 32
    return 16


def register_budget(target, kernel_width: int) -> int:
    """Vector registers a tile may take. LLVM unrolls a kernel row of more than one tap and interleaves the
    copies, which needs spare registers: without them the accumulators spill (measured on znver3, 2 threads, a
    256->256 3x3 conv at 24x24: 6x2-vector tile 17.4 ms, 4x2 11.4 ms; a 1x1 conv 1024->256: 6x2 4.6 ms, 4x2 5.2)."""
    return vector_registers(target) - (4 if kernel_width > 1 else 0)


class PackedConv(ReductionRule):
    """Channel-vectorised, pixel-tiled, parallel schedule for convolutions over input channels."""

    def _schedule(self, sch, main, func, target):
        packable = _layout_free_names(func)
        lanes = vector_lanes(target)
        kinds = _iter_kinds(sch, main)
        iter_vars = sch.get(main).iter_vars
        loops = sch.get_loops(main)
        spatial_kinds = [k for k in kinds if k == tirx.IterVar.DataPar]
        if len(loops) != len(kinds) or kinds[: len(spatial_kinds)] != spatial_kinds or len(spatial_kinds) not in (3, 4):
            return None
        n_spatial = len(spatial_kinds)
        spatial, reduce = loops[:n_spatial], loops[n_spatial:]
        if len(reduce) != n_spatial - 1:  # rc plus one kernel axis per spatial image axis
            return None
        f_var, rc_var = iter_vars[1].var, iter_vars[n_spatial].var
        weight = _weight_read(sch, main, f_var, rc_var, packable)
        channels, in_channels = _extent(sch, spatial[1]), _extent(sch, reduce[0])
        width = _extent(sch, spatial[-1])
        if weight is None or not channels or not width or (in_channels or 0) < MIN_IN_CHANNELS:
            return None
        tile = register_tile(width, channels, lanes, register_budget(target, _extent(sch, reduce[-1]) or 1))
        if tile is None:
            return None
        x_tile, lanes_f = tile

        # the weight, packed once at compile time: O I k.. -> O/F I k.. F
        packed = sch.cache_read(main, weight, "global")
        sch.transform_layout(main, ("read", weight),
                             lambda o, *rest: (o // lanes_f, *rest, o % lanes_f))
        sch.annotate(packed, _LAYOUT_REWRITE, 1)

        n, f, *image = spatial
        fo, fv = sch.split(f, [None, lanes_f])
        xo, xt = sch.split(image[-1], [None, x_tile])
        outer = [n, fo, *image[:-1]]
        sch.reorder(*outer, xo, *reduce, xt, fv)
        rows = sch.fuse(*outer)

        packed_name = sch.get(packed).name_hint
        for producer in sch.get_producers(main):
            if sch.get(producer).name_hint == packed_name or _has_reads_padding(sch, producer):
                continue
            try:
                sch.compute_inline(producer)
            except s_tir.ScheduleError:
                pass
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, xo)
        for consumer in _epilogue(sch, acc):
            sch.reverse_compute_inline(consumer)

        sch.vectorize(fv)
        sch.unroll(xt)
        for loop in sch.get_loops(acc)[2:]:  # below (rows, xo): the tile's write-back
            sch.unroll(loop)
        sch.parallel(rows)
        for producer in sch.get_producers(main):
            if sch.get(producer).name_hint != packed_name:
                _vectorize_inner(sch, producer)  # the padding pass
        sch.decompose_reduction(main, reduce[0])
        return sch
