"""The int8 kernels' dot product and tiles (passes/int8_kernels.py, schedules/int8_conv.py): what the graph pass
(which packs the weights and rounds rows up to whole tiles) and the schedule (which tiles and tensorizes) must
agree on, read from the target.

Each step of a dense int8 conv multiplies four input channels of one pixel (four bytes) by a block of output
channels' weights for them and adds into that block's int32 sums. How, per CPU:

* ``vnni`` (AVX-512 VNNI): one ``vpdpbusd``, sixteen int32 lanes x four u8 x s8 products; weights int8
  ``[16, 4]`` per step;
* ``pmaddwd`` (AVX2, AVX-512 without VNNI), per conv (``conv_dot``): where every weight fits 7 bits (int8 builds
  quantize so there, quantize.py), ``vpmaddubsw`` (u8 x s8 byte pairs summed into int16: two products of at
  most 255 x 64 cannot saturate) and ``vpmaddwd`` by ones into int32, weights int8 ``[lanes, 4]``; else two
  ``vpmaddwd``, each multiplying two input bytes widened to int16 by the weights of two channels, pairwise
  summed into int32 (exact for full-range weights), weights stored int16 ``[2, lanes, 2]``; lanes = the CPU's
  int32 lanes (8 with AVX2);
* ``sdot`` (AArch64 with the dot-product extension: Cortex-A76, A78): one ``sdot``, four int32 lanes x four
  s8 x s8 products; the input bytes shifted from uint8 to int8 (``x - 128``, the zero point with them);
* ``loop`` (anything else, e.g. Cortex-A72): the same sums as a loop LLVM vectorises (exact; not faster than
  fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm.target import codegen

from atrous.pipeline.schedules.blocked_conv import plan_dense
from atrous.pipeline.schedules.isa import VectorISA, isa_of

LANES = 4  # input channels per step (four bytes of one int32 lane)


@dataclass(frozen=True)
class Dot:
    name: str  # "vnni", "pmaddwd" or "loop"
    block: int  # output channels per block: the int32 lanes of one vector of sums
    weight_dtype: str  # how the packed weights are stored
    pairs: bool  # weights [.., 2, block, 2] (pmaddwd's pairs of channels), else [.., block, 4]
    extra_registers: int  # registers a step takes beyond one weight vector per block and one broadcast
    signed_input: bool = False  # the instruction multiplies int8 input bytes (sdot), else uint8


def dot_of(target) -> Dot:
    """The dot product of the CPU ``target`` compiles for (module docstring)."""
    if has_vnni(target):
        return Dot("vnni", 16, "int8", False, 0)
    isa = isa_of(target)
    if isa.name == "neon" and codegen.llvm_cpu_has_features("dotprod", target):
        return Dot("sdot", 4, "int8", False, 0, signed_input=True)
    if isa.name in ("avx512", "avx2"):
        # two weight vectors and two broadcasts per step
        return Dot("pmaddwd", isa.lanes, "int16", True, 2)
    return Dot("loop", 16, "int8", False, 0)


def has_vnni(target) -> bool:
    """Whether the CPU has AVX-512 VNNI (``vpdpbusd`` on 512-bit vectors)."""
    return target.kind.name == "llvm" and bool(codegen.llvm_cpu_has_features("avx512vnni", target))


# the largest weight magnitude vpmaddubsw takes exactly: 2 x 255 x 64 = 32640 fits int16 (ONNX Runtime's
# reduce_range quantizes int8 weights to [-64, 64])
SEVEN_BITS = 64


def conv_dot(target, kernel: np.ndarray) -> Dot:
    """The dot product for one conv's int8 ``kernel``: on ``pmaddwd`` CPUs, ``pmaddubsw`` where every weight
    fits ``SEVEN_BITS`` (module docstring); else the CPU's."""
    dot = dot_of(target)
    if dot.name == "pmaddwd" and int(np.abs(kernel.astype(np.int16)).max(initial=0)) <= SEVEN_BITS:
        return Dot("pmaddubsw", dot.block, "int8", False, dot.extra_registers)
    return dot


def int32_isa(target) -> VectorISA:
    """The register budget of a tile in units of one vector of a block's int32 sums."""
    isa, dot = isa_of(target), dot_of(target)
    per_block = max(1, dot.block // isa.lanes)  # registers one block of sums takes
    return VectorISA(isa.name, dot.block, isa.registers // per_block, isa.fmas_in_flight,
                     isa.reserved // per_block + dot.extra_registers)


def plans(target, width: int, blocks: int, tasks: int) -> list[tuple[int, int, int]]:
    """blocked_conv.plan_dense's tiles for ``blocks`` blocks of int32 sums, rows of ``width``."""
    cores = int(target.attrs.get("num-cores", 1))
    return plan_dense(int32_isa(target), width, blocks, tasks, cores)


def default_pixels(target, out_shape: list[int]) -> int:
    """Pixels of the default tile of a conv with NHWC output ``out_shape`` (int8_kernels.py rounds rows up to it)."""
    n, rows, width, channels = out_shape
    return plans(target, width, -(-channels // dot_of(target).block), n * rows)[0][0]
