"""Default CPU schedule for pointwise (1x1) convs: pixels in vector registers, the image as one pixel axis.

``PackedConv`` vectorises over output channels and tiles up to 6 pixels of a row. For a 1x1 conv in NCHW that
tile is written back transposed: each of its F channels gets a few scalar stores, one row apart. With a short
channel reduction (MobileNet's 16 -> 96 expansion: 16 FMAs per accumulator) the write-back costs as much as the
arithmetic, and with few output channels (24) the tile holds one vector of them. A 1x1 conv with stride 1 is a
matrix product ``[O, K] x [K, H*W]``, and NCHW keeps each channel's pixels contiguous, so this schedule takes the
other orientation, as an SGEMM kernel does:

* the conv and its epilogue iterate over ``H*W`` pixels as one axis (``transform_block_layout``), so rows of odd
  length (DeepLab's 129, 65, 33, 17) do not matter; the last tile of pixels is partitioned off the loop at build
  time (``pragma_loop_partition_hint``), so the bounds check exists only there and every other tile runs without
  one (with the check in every tile, LLVM scalarises the tile: measured 7-15x slower). The kernel's indices are
  narrowed to int32 first: the build's NarrowDataType would narrow the hinted loop's variable later and leave
  the hint naming the old one, and LoopPartition would skip the loop;
* the tile is ``C`` output channels x ``2 x lanes`` pixels (``pixel_tile``): each weight is broadcast once per
  tile row and each input vector feeds ``C`` FMAs; the accumulators stay in registers (AVX2: 6 x 2 of 16);
* the weight is packed once, at compile time, to ``O/C K 1 1 C`` so a tile's ``C`` weights are contiguous;
* the write-back stores whole pixel vectors per channel, applying the epilogue (bias, activation, residual add);
  channel blocks run in parallel;
* a long reduction (K > ``MAX_REDUCTION``) is blocked: each parallel task takes a block of pixels and runs over
  the input channels in blocks of up to 256 (``reduction_block``), all output channels of the pixel block per
  input block, so the input block stays in L2 and each 6-channel weight panel in L1; the task's outputs
  accumulate in memory and get their epilogue once, after the last input block (unblocked, every channel block
  streams the whole input: 0.73-0.82x of PackedConv on 960 -> 160 at 17x17; blocked, 1.04x).

``make bench-pointwise`` times each kernel this rule takes against the same conv with ``pixel_conv=false``
(BENCHMARKS.md; e.g. 16 -> 96 at 129x129 2.17 -> 0.88 ms on znver3, 2 threads). The figures in ``pixel_tile``
come from earlier runs of the same comparison (scratch scripts, a tuning run sharing the cores). The arithmetic
of each output (its reduction order) is unchanged.
"""

from __future__ import annotations

from tvm import sym, tirx

from atrous.pipeline.schedules.cpu import (ReductionRule, _epilogue, _extent, _has_reads_padding, _iter_kinds,
                                           _vectorize_inner)
from atrous.pipeline.schedules.packed_conv import (_LAYOUT_REWRITE, _layout_free_names, _weight_read, vector_lanes,
                                                   vector_registers)

PIXEL_VECTORS = 2  # pixel vectors per tile row: two loads feed 2 x C FMAs
CHANNEL_TILES = (12, 8, 6, 4)
MIN_PIXEL_TILES = 4  # smaller maps (ASPP's pooled branch: one pixel) are left to PackedConv
SHORT_REDUCTION = 48  # input channels up to which the pixel orientation wins whatever the outputs (pixel_tile)
MAX_REDUCTION = 160  # beyond it, the reduction is blocked (reduction_block): unblocked, every channel block
# of the tile streams the whole input and PackedConv wins
MAX_REDUCTION_BLOCK = 256  # input channels per reduction block: an input block of 256 x 64 pixels (64 KB) stays
MIN_REDUCTION_BLOCK = 32  # in L2 while a 256 x 6 weight panel (6 KB) stays in L1
PIXEL_BLOCK_TILES = 2  # pixel tiles per parallel task when the reduction is blocked
EXPANSION = 6  # output / input channels of the expansions it wins on (MobileNet's inverted residuals)
PROJECTION = 3  # input / output channels of the long reductions it wins on (projections), on small maps
SMALL_MAP = 400  # pixels (17x17 and less), where PackedConv's rows are 3 tiles long; or on any map with
LONG_REDUCTION = 960  # input channels or more, where PackedConv's 16-channel weight panel outgrows L1


def pixel_tile(target, out_channels: int, in_channels: int, pixels: int) -> tuple[int, int] | None:
    """(output channels, pixels) of the register tile for a 1x1 conv on ``target``, or None where PackedConv is
    kept. The tile takes ``C x 2`` accumulators, two input vectors and a broadcast weight: C = 6 on AVX2 (16
    registers), 12 with AVX-512 or on AArch64 (32).

    Where it is taken was measured (znver3, 2 threads, DeepLabV3's 1x1 convs with both backbones, each kernel
    alone against PackedConv): the pixel orientation wins where PackedConv's transposed write-back is a large
    share, i.e. short reductions (K <= 48: 1.7-2.5x at 65x65 and 129x129) and, for K <= 160, outputs that fill
    one channel vector only (144 -> 24: 2.7x) or expansions (O >= 6K: 1.2-1.4x); and, blocked over the reduction
    (``reduction_block``), long reductions that project to a third of their channels or fewer on 17x17 maps (O <=
    K/3: 384 -> 64 1.22x, 576 -> 96 1.22x, 2048 -> 256 1.15x; 960 -> 320 and 1280 -> 256 level) or with K >=
    960 on any map (WaveNet's 960 -> 256 over 16000 samples: 1.42x). Not taken: 64 -> 256 at 65x65 (0.91-0.98x
    unblocked), projections on larger maps (256 -> 64 at 65x65 0.92x, 512 -> 128 at 33x33 0.95x, blocked) and
    long reductions to more channels (256 -> 128 at 65x65 0.82x, 512 -> 2048 at 17x17 0.90x, blocked)."""
    if target.kind.name != "llvm":
        return None
    registers, lanes = vector_registers(target), vector_lanes(target)
    pixel_block = PIXEL_VECTORS * lanes
    if in_channels > MAX_REDUCTION:
        wins = (PROJECTION * out_channels <= in_channels and reduction_block(in_channels) is not None
                and (pixels <= SMALL_MAP or in_channels >= LONG_REDUCTION))
    else:
        wins = (in_channels <= SHORT_REDUCTION or out_channels % pixel_block
                or out_channels >= EXPANSION * in_channels)
    if not wins or pixels < MIN_PIXEL_TILES * pixel_block:
        return None
    for channels in CHANNEL_TILES:
        if out_channels % channels == 0 and channels * PIXEL_VECTORS + PIXEL_VECTORS + 1 <= registers:
            return channels, pixel_block
    return None


def reduction_block(in_channels: int) -> int | None:
    """Input channels per block of a long reduction (K > MAX_REDUCTION): the largest divisor of K up to
    ``MAX_REDUCTION_BLOCK``, or None when K has none above ``MIN_REDUCTION_BLOCK`` (the schedule is not taken)."""
    block = max(d for d in range(1, min(in_channels, MAX_REDUCTION_BLOCK) + 1) if in_channels % d == 0)
    return block if block >= MIN_REDUCTION_BLOCK else None


def is_pointwise(kernel: tuple, strides: tuple, padding: tuple, groups: int) -> bool:
    """A 1x1 (or one-tap) conv with stride 1, no padding and no groups: what PixelConv takes."""
    return all(k == 1 for k in kernel) and all(s == 1 for s in strides) and not any(padding) and groups == 1


class PixelConv(ReductionRule):
    """Pixel-vectorised, channel-tiled schedule for 1x1 convs (module docstring)."""

    def apply(self, func, target, tunable):
        # int32 indices, so that the partition hint survives the build (module docstring); lowering has narrowed
        # every CPU kernel already (schedules/narrow.py), so that tuning records replay on them
        return super().apply(_narrowed(func) if isinstance(func, tirx.PrimFunc) else func, target, tunable)

    def _schedule(self, sch, main, func, target):
        kinds = _iter_kinds(sch, main)
        loops = sch.get_loops(main)
        spatial_rank = kinds.count(tirx.IterVar.DataPar)
        if (len(loops) != len(kinds) or spatial_rank not in (3, 4)
                or kinds != [tirx.IterVar.DataPar] * spatial_rank + [tirx.IterVar.CommReduce] * (spatial_rank - 1)):
            return None
        spatial, reduce = loops[:spatial_rank], loops[spatial_rank:]
        if any(_extent(sch, r) != 1 for r in reduce[1:]):  # one tap per output: a pointwise conv
            return None
        iter_vars = sch.get(main).iter_vars
        weight = _weight_read(sch, main, iter_vars[1].var, iter_vars[spatial_rank].var, _layout_free_names(func))
        image = [_extent(sch, s) for s in spatial[2:]]
        out_channels, in_channels = _extent(sch, spatial[1]), _extent(sch, reduce[0])
        if weight is None or None in image or not out_channels or not in_channels:
            return None
        pixels = image[0] * (image[1] if len(image) == 2 else 1)
        tile = pixel_tile(target, out_channels, in_channels, pixels)
        if tile is None or not _reads_its_own_pixel(sch, main, weight, spatial_rank):
            return None
        channels, lanes = tile

        packed = sch.cache_read(main, weight, "global")  # O I 1.. -> O/C I 1.. C, folded into a constant
        sch.transform_layout(main, ("read", weight), lambda o, i, *taps: (o // channels, i, *taps, o % channels))
        sch.annotate(packed, _LAYOUT_REWRITE, 1)
        packed_name = sch.get(packed).name_hint
        for producer in sch.get_producers(main):  # a 1x1 conv's "padding" is a copy: read the input directly
            if sch.get(producer).name_hint != packed_name and not _has_reads_padding(sch, producer):
                sch.compute_inline(producer)

        epilogue = _epilogue(sch, main)
        if len(image) == 2:  # (n, c, y, x) -> (n, c, y * W + x) for the conv, its epilogue and the write-back
            width = image[1]

            def flat(n, c, y, x):
                return n, c, y * width + x

            if epilogue:  # the conv's output is an intermediate buffer: lay it out flat
                sch.transform_layout(main, ("write", 0), flat)
            sch.transform_block_layout(main, lambda n, c, y, x, k, ky, kx: (*flat(n, c, y, x), k, ky, kx))
            for block in epilogue:
                if len(sch.get(block).iter_vars) != 4:
                    return None
                sch.transform_block_layout(block, flat)
        blocked = in_channels > MAX_REDUCTION
        # the accumulator: a register tile, or for a blocked reduction a block of the output, finished (epilogue
        # applied) once its last reduction block is done
        acc = sch.cache_write(main, 0, "global" if blocked else "local")
        if len(image) == 2 and not epilogue:  # the conv writes the kernel's output: its accumulator goes flat
            sch.transform_layout(main, ("write", 0), flat)
            sch.transform_block_layout(acc, flat)
        for consumer in _epilogue(sch, acc):
            sch.reverse_compute_inline(consumer)

        n, f, p, k, *taps = sch.get_loops(main)
        fo, fi = sch.split(f, [None, channels])
        if blocked:
            tasks, tile, pi = sch.split(p, [None, PIXEL_BLOCK_TILES, lanes])
            ko, ki = sch.split(k, [None, reduction_block(in_channels)])
            sch.reorder(n, tasks, ko, fo, tile, ki, *taps, fi, pi)
            sch.reverse_compute_at(acc, tasks)
            sch.vectorize(sch.split(sch.fuse(*sch.get_loops(acc)[2:]), [None, lanes])[1])  # the write-back
            first = ko
        else:
            sch.reorder(n, fo, p, k, *taps, fi)
            tile, pi = sch.split(p, [None, lanes])
            sch.reorder(tile, k, *taps, fi, pi)
            tasks = sch.fuse(n, fo)
            sch.reverse_compute_at(acc, tile)
            for loop in sch.get_loops(acc)[2:]:  # the write-back of the tile
                sch.unroll(loop)
            first = k
        sch.vectorize(pi)
        sch.unroll(fi)
        sch.parallel(tasks)
        if pixels % lanes:  # only the last tile checks its bounds (in the last block of tiles, if blocked)
            for loop in [tasks, tile] if blocked else [tile]:
                sch.annotate(loop, "pragma_loop_partition_hint", 1)
        for producer in sch.get_producers(main):
            if sch.get(producer).name_hint != packed_name:
                _vectorize_inner(sch, producer)  # real padding (a 1x1 conv with padding): one vectorised pass
        sch.decompose_reduction(main, first)
        return sch


def _reads_its_own_pixel(sch, main, weight: int, spatial_rank: int) -> bool:
    """Whether output pixel (y, x) reads input pixel (y, x): stride 1, no offset (the input is the one read
    that is not the weight, indexed by the block's own spatial variables plus the one-tap kernel variables)."""
    reads = [r for i, r in enumerate(sch.get(main).reads) if i != weight]
    if len(reads) != 1:
        return False
    iters = sch.get(main).iter_vars
    spatial, taps = iters[2:spatial_rank], iters[spatial_rank + 1:]
    region = reads[0].region[2:]
    if len(region) != len(spatial):
        return False
    for r, s, t in zip(region, spatial, taps):
        offset = r.min - s.var - t.var
        if not (isinstance(r.extent, tirx.IntImm) and int(r.extent) == 1 and _is_zero(offset)):
            return False
    return True


def _is_zero(expr) -> bool:
    return sym.Analyzer().can_prove_equal(expr, 0)


def _narrowed(func):
    from atrous.pipeline.schedules.narrow import narrowed

    return narrowed(func)
