"""The ISA guard: the hot loop of each kind of CPU kernel, generated for AVX2, AVX-512 and NEON cores whatever this
machine is, keeps its register tile in registers and is made of FMAs on the ISA's widest vectors. This is what
catches a schedule that collapses on a CPU nobody here runs (the AVX-512 builds once ran at 3-4% of peak)."""

import shutil

import pytest

from atrous.pipeline.bench.hot_loops import CPUS, HOT_KERNELS, assembly, estimated_peak, hot_loop, target_for
from atrous.pipeline.schedules.isa import isa_of

REGISTERS = {"avx512": "zmm", "avx2": "ymm", "neon": "v"}


@pytest.mark.parametrize("cpu", sorted(CPUS))
@pytest.mark.parametrize("kernel", HOT_KERNELS, ids=[k.name for k in HOT_KERNELS])
def test_the_hot_loop_keeps_its_tile_in_vector_registers(kernel, cpu):
    isa = isa_of(target_for(cpu))
    stats = hot_loop(assembly(kernel, cpu))
    assert stats.fmas > 0, f"{kernel.name} on {cpu}: no FMA loop"
    assert stats.registers == REGISTERS[isa.name], f"{kernel.name} on {cpu}: FMAs on {stats.registers}"
    assert stats.stack == 0, f"{kernel.name} on {cpu}: {stats.stack} vector spills in the hot loop"


@pytest.mark.skipif(shutil.which("llvm-mca-19") is None, reason="llvm-mca-19 (Debian llvm-19) is not installed")
@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_llvm_mca_estimates_every_hot_loop_near_the_fma_peak(cpu):
    """A static estimate (LLVM's model of the core), not a measurement; a floor far below what the loops reach
    today (67-100%), so that only a collapse trips it, on any CPU."""
    for kernel in HOT_KERNELS:
        estimate = estimated_peak(hot_loop(assembly(kernel, cpu)), cpu)
        assert estimate >= 0.5, f"{kernel.name} on {cpu}: {estimate:.0%} of the FMA peak by llvm-mca"
