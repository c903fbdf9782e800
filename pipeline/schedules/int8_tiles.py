"""Tiles of the int8 kernels (passes/int8_kernels.py, schedules/int8_conv.py): what both the graph pass (which
rounds rows up to whole tiles) and the schedule (which tiles them) must agree on."""

from __future__ import annotations

from tvm.target import codegen

from atrous.pipeline.schedules.blocked_conv import plan_dense
from atrous.pipeline.schedules.isa import VectorISA, isa_of

BLOCK = 16  # output channels per block: int32 lanes of one 512-bit vector (the VNNI dot product's width)
LANES = 4  # input channels per dot product (four bytes of one int32 lane)


def has_vnni(target) -> bool:
    """Whether the CPU has AVX-512 VNNI (``vpdpbusd`` on 512-bit vectors)."""
    return target.kind.name == "llvm" and bool(codegen.llvm_cpu_has_features("avx512vnni", target))


def int32_isa(target) -> VectorISA:
    """The register budget of a tile in units of one int32 vector of BLOCK lanes."""
    isa = isa_of(target)
    per_block = max(1, BLOCK // isa.lanes)  # registers one block of sixteen int32 sums takes
    return VectorISA(isa.name, BLOCK, isa.registers // per_block, isa.fmas_in_flight, isa.reserved // per_block)


def plans(target, width: int, blocks: int, tasks: int) -> list[tuple[int, int, int]]:
    """blocked_conv.plan_dense's tiles for ``blocks`` blocks of sixteen int32 sums, rows of ``width``."""
    cores = int(target.attrs.get("num-cores", 1))
    return plan_dense(int32_isa(target), width, blocks, tasks, cores)


def default_pixels(target, out_shape: list[int]) -> int:
    """Pixels of the default tile of a conv with NHWC output ``out_shape`` (int8_kernels.py rounds rows up to it)."""
    n, rows, width, channels = out_shape
    return plans(target, width, -(-channels // BLOCK), n * rows)[0][0]
