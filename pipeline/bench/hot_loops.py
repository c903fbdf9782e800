"""The hot loops of the CPU kernels, inspected for CPUs this machine does not have.

A schedule that was fast on one CPU can collapse on another (the AVX-512 builds once ran at 3-4% of peak, and
nothing noticed). Every CPU target is a cross target for LLVM, so the code generated for any of them can be read
here: ``HOT_KERNELS`` are representative kernels of each kind the default schedules produce, built by the same
TensorIR and rules as a model (TE compute + rule), for each CPU of ``CPUS``. From the assembly:

* ``hot_loop``: the register tile's innermost loop (x86 ``vfmadd*``, AArch64 ``fmla``); ``LoopStats`` counts its
  FMAs, its vector spills (a vector register to or from the stack: ``(%rsp)`` / ``[sp``) and the vector
  registers its FMAs use;
* ``mca_cycles``: LLVM's static performance model (``llvm-mca``, Debian ``llvm-19``) of that loop on that CPU,
  in cycles per iteration; ``fma_cycles``: the same model's cycles per FMA of a loop of independent FMAs, the
  core's peak. Their ratio is the estimated fraction of the FMA peak: a static estimate (no caches, no memory
  stalls, perfect branch prediction), comparable across CPUs, not a measurement.

``tests/test_isa.py`` fails when a hot loop spills or lacks its FMAs; ``make bench-isa`` writes the estimates to
BENCHMARKS.md.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

from atrous.pipeline.errors import ToolchainError

MCA = "llvm-mca-19"

# CPU -> (LLVM triple, features); x86 CPUs run here or not, AArch64 ones never do (nothing is run)
CPUS = {
    "znver3": ("x86_64-linux-gnu", ()),
    "znver4": ("x86_64-linux-gnu", ()),
    "skylake-avx512": ("x86_64-linux-gnu", ()),
    "cortex-a72": ("aarch64-linux-gnu", ("+neon",)),
    "cortex-a76": ("aarch64-linux-gnu", ("+neon", "+dotprod")),
}


def target_for(cpu: str):
    import tvm

    triple, features = CPUS[cpu]
    spec = {"kind": "llvm", "mtriple": triple, "mcpu": cpu, "num-cores": 4}
    if features:
        spec["mattr"] = list(features)
    return tvm.target.Target(spec)


# ------------------------------------------------------------------------------------------ the kernels
# Each kernel's rows are whole register tiles of the target's default tile, enough of them that the tile loop stays
# a loop, so that it is the one to read (the peeled last tile of other widths is a loop of its own;
# tests/test_blocked.py checks the peeling).
def _dense(channels: int, out_channels: int, taps: int, target, dilation: int = 1):
    from tvm import te

    from atrous.pipeline.passes.blocked_kernels import dense
    from atrous.pipeline.schedules.blocked_conv import BlockedConv
    from atrous.pipeline.schedules.isa import conv_tile, isa_of

    isa = isa_of(target)
    block = isa.block
    size = 8 * conv_tile(isa, 1 << 10, out_channels // block)[0]
    pad = dilation * (taps - 1) // 2
    data = te.placeholder((1, channels // block, size, size, block), name="data")
    weight = te.placeholder((out_channels // block, channels // block, taps, taps, block, block), name="weight")
    bias = te.placeholder((1, out_channels // block, 1, 1, block), name="bias")
    conv = dense(data, weight, [1, 1], [dilation] * 2, [pad] * 2, [pad] * 2, False, "conv2d_nchwc")
    out = te.compute(conv.shape, lambda *i: te.max(conv(*i) + bias[0, i[1], 0, 0, i[-1]], 0.0), name="relu")
    return _scheduled([data, weight, bias, out], BlockedConv(), target), 2 * channels * out_channels * taps ** 2


def _depthwise(channels: int, taps: int, target, dilation: int = 1):
    from tvm import te

    from atrous.pipeline.passes.blocked_kernels import depthwise
    from atrous.pipeline.schedules.blocked_window import BlockedWindow, window_tile
    from atrous.pipeline.schedules.isa import isa_of

    isa = isa_of(target)
    block = isa.block
    size = 16 * window_tile(isa, 1 << 10, taps * taps)
    pad = dilation * (taps - 1) // 2
    data = te.placeholder((1, channels // block, size, size, block), name="data")
    weight = te.placeholder((channels // block, 1, taps, taps, 1, block), name="weight")
    conv = depthwise(data, weight, [1, 1], [dilation] * 2, [pad] * 2, [pad] * 2, "depthwise_conv2d_nchwc")
    return _scheduled([data, weight, conv], BlockedWindow(), target), 2 * channels * taps ** 2


def _conv1d(channels: int, dilation: int, target):
    from tvm import te

    from atrous.pipeline.passes.blocked_kernels import dense
    from atrous.pipeline.schedules.blocked_conv import BlockedConv
    from atrous.pipeline.schedules.isa import conv_tile, isa_of

    isa = isa_of(target)
    block = isa.block
    length = 30 * conv_tile(isa, 1 << 10, channels // block)[0]
    data = te.placeholder((1, channels // block, length + 2 * dilation, block), name="data")
    weight = te.placeholder((channels // block, channels // block, 3, block, block), name="weight")
    conv = dense(data, weight, [1], [dilation], [0], [0], False, "conv1d_nchwc")
    return _scheduled([data, weight, conv], BlockedConv(), target), 2 * channels * channels * 3


def _scheduled(tensors, rule, target):
    from tvm import te

    from atrous.pipeline.schedules.narrow import narrowed

    func = narrowed(te.create_prim_func(tensors).with_attr("global_symbol", "main"))
    with target:
        sch = rule.apply(func, target, False)
    if sch is None:
        raise ValueError(f"{type(rule).__name__} did not take the kernel")
    return sch


@dataclass(frozen=True)
class HotKernel:
    name: str
    build: Callable  # target -> (scheduled s_tir.Schedule, FLOPs per output pixel)


HOT_KERNELS = [
    HotKernel("conv 3x3 256->256", lambda t: _dense(256, 256, 3, t)),
    HotKernel("conv 3x3 rate 2 128->128", lambda t: _dense(128, 128, 3, t, dilation=2)),
    HotKernel("conv 1x1 960->160", lambda t: _dense(960, 160, 1, t)),
    HotKernel("conv 1x1 64->256", lambda t: _dense(64, 256, 1, t)),
    HotKernel("depthwise 3x3 144ch", lambda t: _depthwise(144, 3, t)),
    HotKernel("depthwise 3x3 rate 2 576ch", lambda t: _depthwise(576, 3, t, dilation=2)),
    HotKernel("conv1d k3 rate 8 64->64", lambda t: _conv1d(64, 8, t)),
]


def assembly(kernel: HotKernel, cpu: str) -> str:
    import tvm

    target = target_for(cpu)
    sch, _ = kernel.build(target)
    with tvm.transform.PassContext(opt_level=3):
        executable = tvm.compile(sch.mod, target=target)
    return executable.mod.inspect_source("asm")


# ---------------------------------------------------------------------------------------- the hot loop
_LABEL = re.compile(r"^(\.?L\w+):")
_X86_JUMP = re.compile(r"^\s+j\w+\s+(\.?L\w+)")
_ARM_JUMP = re.compile(r"^\s+(?:b(?:\.\w+)?|cbn?z\s+\w+,|tbn?z\s+\w+,\s*#\d+,)\s+(\.?L\w+)")


def _is_fma(line: str) -> bool:
    return bool(re.match(r"\s+(vfn?madd|vfn?msub|fmla|fmadd)\w*\s", line))


def innermost_loops(asm: str) -> list[list[str]]:
    """Bodies (instruction lines) of the loops that contain FMAs and no other such loop: a backward jump to a
    label closes the loop that starts at the label."""
    lines = asm.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    spans = []
    for i, line in enumerate(lines):
        m = _X86_JUMP.match(line) or _ARM_JUMP.match(line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            start = labels[m.group(1)]
            body = [b for b in lines[start:i + 1] if b.startswith("\t") and not b.startswith("\t.")]
            if any(_is_fma(b) for b in body):
                spans.append((start, i, body))
    return [body for s, e, body in spans
            if not any(s <= s2 and e2 <= e and (s2, e2) != (s, e) for s2, e2, _ in spans)]


@dataclass(frozen=True)
class LoopStats:
    fmas: int
    stack: int  # vector registers stored to or loaded from the stack (spills and reloads)
    registers: str  # the widest vector registers the FMAs use: zmm, ymm, xmm or v (NEON)
    body: tuple[str, ...]


def _loads(line: str) -> bool:
    """An instruction that reads memory: an x86 operand in parentheses (not an lea), an AArch64 ld*."""
    return bool(re.match(r"\s+ld", line)) or ("(" in line and not re.match(r"\s+lea", line))


def _vector_spill(line: str) -> bool:
    """A vector register stored to or loaded from the stack."""
    return bool(re.search(r"\(%rsp\)", line) and re.search(r"%[xyz]mm", line)
                or re.search(r"\[sp[,\]]", line) and re.search(r"\b[qds]\d+\b", line))


def hot_loop(asm: str) -> LoopStats:
    """The register tile's loop: the innermost FMA loop with the most FMAs per memory read (a tile's defining
    property; a peeled tail tile can hold more FMAs, fully unrolled, but reads memory for nearly each), then the
    most FMAs."""
    loops = innermost_loops(asm)
    if not loops:
        return LoopStats(0, 0, "", ())

    def key(body):
        fmas = sum(_is_fma(x) for x in body)
        return fmas / max(1, sum(_loads(x) for x in body)), fmas

    body = max(loops, key=key)
    fmas = [x for x in body if _is_fma(x)]
    stack = sum(_vector_spill(x) for x in body)
    registers = next((r for r in ("zmm", "ymm", "xmm") if any(r in x for x in fmas)),
                     "v" if any(re.search(r"\bv\d+\.", x) for x in fmas) else "")
    return LoopStats(len(fmas), stack, registers, tuple(body))


# ------------------------------------------------------------------------------------------ llvm-mca
def _mca(body: list[str] | tuple[str, ...], cpu: str, iterations: int = 200) -> float:
    """Cycles per iteration of ``body`` on ``cpu`` by llvm-mca (the loop's own branch included)."""
    if shutil.which(MCA) is None:
        raise ToolchainError(f"estimating loops on other CPUs needs {MCA}; install it with: "
                             "sudo apt-get install llvm-19")
    triple = CPUS[cpu][0]
    source = "\n".join(line for line in body) + "\n"
    done = subprocess.run([MCA, f"-mtriple={triple}", f"-mcpu={cpu}", f"-iterations={iterations}"],
                          input=source, capture_output=True, text=True)
    if done.returncode != 0:
        raise ToolchainError(f"{MCA} failed on a loop for {cpu}: {done.stderr.strip()[:300]}")
    cycles = re.search(r"Total Cycles:\s+(\d+)", done.stdout)
    return int(cycles.group(1)) / iterations


def mca_cycles(stats: LoopStats, cpu: str) -> float:
    return _mca(stats.body, cpu)


@functools.lru_cache(maxsize=None)
def fma_cycles(cpu: str, registers: str) -> float:
    """llvm-mca's cycles per FMA on ``cpu`` for a loop of 24 independent FMAs on ``registers``: its peak."""
    if CPUS[cpu][0].startswith("aarch64"):
        body = [f"\tfmla\tv{i}.4s, v30.4s, v31.4s" for i in range(24)] + ["\tsubs\tx0, x0, #1", "\tb.ne\t.L0"]
    else:
        body = [f"\tvfmadd231ps\t%{registers}30, %{registers}31, %{registers}{i}" for i in range(24)]
        body += ["\tdecq\t%rax", "\tjne\t.L0"]
    return _mca(body, cpu) / 24


def estimated_peak(stats: LoopStats, cpu: str) -> float:
    """The hot loop's FMAs at the model's peak rate over the model's cycles for the loop: a static estimate."""
    if not stats.fmas:
        return 0.0
    return stats.fmas * fma_cycles(cpu, stats.registers if stats.registers != "v" else "v") / mca_cycles(stats, cpu)
