"""CPU schedules of the int8 convs of passes/int8_kernels.py.

Dense: the kernel reads the channels-last uint8 input (four channels of a pixel: four neighbouring bytes) and the
weight packed for the CPU's dot product (schedules/int8_tiles.py), so a block of output channels' sums over four
input channels of one pixel is one step: one ``vpdpbusd`` with AVX-512 VNNI (64 byte products into 16 int32
lanes, four times the multiply-adds of an fp32 FMA), two ``vpmaddwd`` on other x86 CPUs (int16 pairs, twice an
fp32 FMA's). The loops, as blocked_conv.py's for fp32::

    parallel(batch, output channel tiles, rows) . pixel tiles . input channel quads . taps
        . [pixels (unrolled) . channel blocks (unrolled) . (block lanes x 4 bytes: one step)]

The tile's accumulators are a local buffer ``[pixels, vectors x block]``, each block's sums one vector register,
and the epilogue (compensation, scale, bias, requantization) is applied to the tile as it is written back to the
NHWC output, a block of channels of a pixel at a time. The tile is blocked_conv.plan_dense's (one int32 vector
per block as one fp32 vector, plus the step's extra registers); tunable like it. Without a dot product of ours
(NEON, or anything else) the same loops run with the four bytes as four vector multiply-adds over the lanes
(exact, and 5.7x slower than fp32 where measured: integer_convs "auto" does not take them there).

Depthwise int8 convs (``DepthwiseInt8``) are tiled over pixels x one vector of channels.
"""

from __future__ import annotations

import math

from tvm import s_tir
from tvm.script import tirx as T

from atrous.pipeline.passes.int8_kernels import DENSE, DEPTHWISE
from atrous.pipeline.schedules.cpu import ReductionRule, _epilogue, _extent, _vectorize_inner, choose
from atrous.pipeline.schedules.int8_tiles import Dot, dot_of, plans


@T.prim_func(s_tir=True)
def _dot_16x4(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
              c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    """What the instruction computes: sixteen int32 sums, each plus four byte products."""
    with T.sblock("root"):
        T.reads(c[0:16], a[0:4], b[0:16, 0:4])
        T.writes(c[0:16])
        for i, k in T.grid(16, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                c[vi] = c[vi] + T.Cast("int32", a[vk]) * T.Cast("int32", b[vi, vk])


@T.prim_func(s_tir=True)
def _dot_16x4_vnni(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
                   c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    """One vpdpbusd: the four input bytes broadcast as one int32 to all sixteen lanes (LLVM 19 and later take
    the byte operands as <64 x i8>; older LLVMs took <16 x i32>, which TVM's own x86 intrinsic still passes)."""
    with T.sblock("root"):
        T.reads(c[0:16], a[0:4], b[0:16, 0:4])
        T.writes(c[0:16])
        quad = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
        c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), c.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(quad, 16), dtype="uint8x64"), b.vload([0, 0], dtype="int8x64"), dtype="int32x16")


# the sums live in a local (register) buffer, which TVM's own x86 intrinsic (global scope) does not match
DOT_16x4_VNNI = "atrous_dot_16x4_u8s8s32_vnni"
s_tir.TensorIntrin.register(DOT_16x4_VNNI, _dot_16x4, _dot_16x4_vnni, override=True)

@T.prim_func(s_tir=True)
def _dot_4x4(a: T.Buffer((4,), "int8", offset_factor=1), b: T.Buffer((4, 4), "int8", offset_factor=1),
             c: T.Buffer((4,), "int32", offset_factor=1, scope="local")) -> None:
    """What sdot computes: four int32 sums, each plus four s8 x s8 products."""
    with T.sblock("root"):
        T.reads(c[0:4], a[0:4], b[0:4, 0:4])
        T.writes(c[0:4])
        for i, k in T.grid(4, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                c[vi] = c[vi] + T.Cast("int32", a[vk]) * T.Cast("int32", b[vi, vk])


@T.prim_func(s_tir=True)
def _dot_4x4_sdot(a: T.Buffer((4,), "int8", offset_factor=1), b: T.Buffer((4, 4), "int8", offset_factor=1),
                  c: T.Buffer((4,), "int32", offset_factor=1, scope="local")) -> None:
    """One sdot (AArch64 dot-product extension): the four input bytes broadcast to the four lanes."""
    with T.sblock("root"):
        T.reads(c[0:4], a[0:4], b[0:4, 0:4])
        T.writes(c[0:4])
        quad = T.reinterpret(a.vload([0], "int8x4"), dtype="int32")
        c[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), c.vload([0], dtype="int32x4"),
            T.reinterpret(T.broadcast(quad, 4), dtype="int8x16"), b.vload([0, 0], dtype="int8x16"), dtype="int32x4")


DOT_4x4_SDOT = "atrous_dot_4x4_s8s8s32_sdot"
s_tir.TensorIntrin.register(DOT_4x4_SDOT, _dot_4x4, _dot_4x4_sdot, override=True)

PMADDWD = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}  # int32 lanes -> instruction
PMADDUBSW = {8: "llvm.x86.avx2.pmadd.ub.sw", 16: "llvm.x86.avx512.pmaddubs.w.512"}


def _pmaddubsw_intrinsic(lanes: int) -> str:
    """Register (once) the pmaddubsw step for ``lanes`` int32 sums over 7-bit weights: the four input bytes
    broadcast, ``vpmaddubsw`` summing each pair of u8 x s8 products into int16 (exact: at most 2 x 255 x 64),
    ``vpmaddwd`` by ones summing the two pairs of a lane into int32."""
    name = f"atrous_dot_{lanes}x4_u8s8s32_pmaddubsw"
    quads, pairs, sums = f"int8x{4 * lanes}", f"int16x{2 * lanes}", f"int32x{lanes}"
    byte_pairs, words = PMADDUBSW[lanes], PMADDWD[lanes]

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            for i, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.Cast("int32", a[vk]) * T.Cast("int32", b[vi, vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            quad = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
            products = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(byte_pairs),
                                               T.reinterpret(T.broadcast(quad, lanes), dtype=quads),
                                               b.vload([0, 0], dtype=quads), dtype=pairs)
            c[T.ramp(T.int32(0), 1, lanes)] = c.vload([0], dtype=sums) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(words), products, T.broadcast(T.int16(1), 2 * lanes), dtype=sums)

    s_tir.TensorIntrin.register(name, desc, impl, override=True)
    return name


def _pmaddwd_intrinsic(lanes: int) -> str:
    """Register (once) the pmaddwd step for ``lanes`` int32 sums: the four input bytes as two pairs widened to
    int16, each broadcast and multiplied by its pair of weight channels, ``vpmaddwd`` summing each lane's two
    products into int32 (exact for u8 x s8: no saturation)."""
    name = f"atrous_dot_{lanes}x4_u8s16s32_pmaddwd"
    wide, half = f"int16x{2 * lanes}", f"int32x{lanes}"
    instruction = PMADDWD[lanes]

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((2, lanes, 2), "int16", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:2, 0:lanes, 0:2])
            T.writes(c[0:lanes])
            for i, p, q in T.grid(lanes, 2, 2):
                with T.sblock("update"):
                    vi, vp, vq = T.axis.remap("SRR", [i, p, q])
                    c[vi] = c[vi] + T.Cast("int32", a[vp * 2 + vq]) * T.Cast("int32", b[vp, vi, vq])

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((2, lanes, 2), "int16", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:2, 0:lanes, 0:2])
            T.writes(c[0:lanes])
            low = T.reinterpret(T.Cast("int16x2", a.vload([0], "uint8x2")), dtype="int32")
            high = T.reinterpret(T.Cast("int16x2", a.vload([2], "uint8x2")), dtype="int32")
            c[T.ramp(T.int32(0), 1, lanes)] = (
                c.vload([0], dtype=half)
                + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(instruction),
                                          T.reinterpret(T.broadcast(low, lanes), dtype=wide),
                                          b.vload([0, 0, 0], dtype=wide), dtype=half)
                + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(instruction),
                                          T.reinterpret(T.broadcast(high, lanes), dtype=wide),
                                          b.vload([1, 0, 0], dtype=wide), dtype=half))

    s_tir.TensorIntrin.register(name, desc, impl, override=True)
    return name


class Int8Conv(ReductionRule):
    """Register-tiled, VNNI-tensorized schedule of a dense int8 conv (module docstring); tunable: the tile."""

    TUNABLE = True

    def _schedule(self, sch, main, func, target):
        if sch.get(main).name_hint != DENSE:
            return None
        loops = sch.get_loops(main)
        dot = dot_of(target)
        pairs = len(loops) == 9  # the step's four channels as (pair, channel of it): pmaddwd's int16 weights
        if len(loops) not in (8, 9) or (pairs and not dot.pairs):
            return None
        if dot.name == "pmaddwd" and not pairs:  # int8 weights on a pmaddwd CPU: 7-bit ones (int8_tiles.conv_dot)
            dot = Dot("pmaddubsw", dot.block, "int8", False, dot.extra_registers)
        n, y, x, k, rc, ry, rx, *quad = loops
        width, channels = _extent(sch, x), _extent(sch, k)
        if not width or not channels or channels % dot.block:
            return None
        # tiles that divide the row only: a bounds check in the tile would stop the tensorization (int8_kernels.py
        # rounds the row up to the default tile)
        every = plans(target, width, channels // dot.block, _extent(sch, n) * _extent(sch, y))
        options = [p for p in every if width % p[0] == 0]
        if not options:  # the default tile's channel vectors and as many pixels as divide the row (never declines)
            pixels, vectors, _ = every[0]
            options = [(max(d for d in range(1, pixels + 1) if width % d == 0), vectors, 1)]
        pixels, vectors, _ = choose(sch, options, self.tunable)
        kb, lanes = sch.split(k, [None, dot.block])
        kbo, kbi = sch.split(kb, [None, vectors])
        xo, xi = sch.split(x, [None, pixels])
        # a dot-product instruction takes the (lanes x 4 bytes) step whole; the plain loop makes the four bytes
        # four vector multiply-adds over the lanes, so the lanes go innermost
        ri = quad[0]
        inner = (ri, lanes) if dot.name == "loop" else (lanes, *quad)
        sch.reorder(n, kbo, y, xo, rc, ry, rx, xi, kbi, *inner)
        outer = sch.fuse(n, kbo, y)
        acc = sch.cache_write(main, 0, "local")  # the tile [pixels, vectors x block]: each block one vector
        sch.reverse_compute_at(acc, xo)
        for consumer in _epilogue(sch, acc):
            sch.reverse_compute_inline(consumer)
        write_loops = sch.get_loops(acc)[2:]
        sch.unroll(xi)
        sch.unroll(kbi)
        sch.parallel(outer)
        for producer in sch.get_producers(main):  # the zero-point padding pass, where the conv pads
            _vectorize_inner(sch, producer)
        if dot.name == "loop":  # loop kinds on the whole reduction block, before its init is split off
            sch.unroll(ri)
            sch.vectorize(lanes)
        init = sch.decompose_reduction(main, rc)
        if dot.name != "loop":
            sch.vectorize(sch.get_loops(init)[-1])
            intrinsic = {"vnni": lambda: DOT_16x4_VNNI, "sdot": lambda: DOT_4x4_SDOT,
                         "pmaddubsw": lambda: _pmaddubsw_intrinsic(dot.block),
                         "pmaddwd": lambda: _pmaddwd_intrinsic(dot.block)}[dot.name]()
            sch.tensorize(lanes, intrinsic)
        _write_back(sch, acc, write_loops)
        return sch


class DepthwiseInt8(ReductionRule):
    """A depthwise int8 conv, channels-last: parallel over rows, a tile of output pixels (``DEPTHWISE_PIXELS``,
    the first the default, the others the tuner's choices) x one vector of int32 sums (16 channels, or what
    divides the channels) in registers, the taps unrolled; each tap loads the pixels' bytes of those channels,
    widens them and multiplies by the tap's weights."""

    TUNABLE = True

    def _schedule(self, sch, main, func, target):
        if sch.get(main).name_hint != DEPTHWISE:
            return None
        loops = sch.get_loops(main)
        if len(loops) != 6:
            return None
        n, y, x, c, ry, rx = loops
        width, channels = _extent(sch, x), _extent(sch, c)
        lanes = max((d for d in (16, 8, 4) if channels % d == 0), default=1)
        if not width or lanes == 1:
            return None
        options = [min(p, width) for p in DEPTHWISE_PIXELS]
        pixels = choose(sch, list(dict.fromkeys(options)), self.tunable)
        cb, vector = sch.split(c, [None, lanes])
        xo, xi = sch.split(x, [None, pixels])
        sch.reorder(n, y, cb, xo, ry, rx, xi, vector)
        outer = sch.fuse(n, y, cb)
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, xo)
        for consumer in _epilogue(sch, acc):
            sch.reverse_compute_inline(consumer)
        write_loops = sch.get_loops(acc)[2:]
        sch.unroll(ry)
        sch.unroll(rx)
        sch.unroll(xi)
        sch.vectorize(vector)
        sch.parallel(outer)
        if width % pixels:
            sch.annotate(xo, "pragma_loop_partition_hint", 1)
        for producer in sch.get_producers(main):  # the zero-point padding pass
            _vectorize_inner(sch, producer)
        init = sch.decompose_reduction(main, ry)
        sch.vectorize(sch.get_loops(init)[-1])
        _write_back(sch, acc, write_loops)
        return sch


# output pixels per depthwise tile, the default first: a guess (8 int32 vectors of sums, the taps' loads and
# widenings beside them fit 32 AVX-512 registers); 4 and 16 measured level with it on DeepLabV3-MobileNet within
# this machine's noise (+-25%), so the tuner decides
DEPTHWISE_PIXELS = (8, 4, 16)


def _write_back(sch, acc, loops) -> None:
    """The tile's write-back: channel lanes vectorised (the epilogue's arithmetic on whole vectors), the rest
    unrolled."""
    extents = [_extent(sch, loop) for loop in loops]
    if not loops or math.prod(e or 1 for e in extents) > 4096:
        return
    try:
        *tile, inner = loops
        sch.vectorize(inner)
        for loop in tile:
            sch.unroll(loop)
    except s_tir.ScheduleError:
        pass
