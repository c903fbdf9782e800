"""``make bench-isa``: the hot loops of the CPU kernels on CPUs this machine may not be, estimated by llvm-mca.

For each kernel of ``hot_loops.HOT_KERNELS`` and each CPU of ``hot_loops.CPUS`` (AVX2, AVX-512, NEON cores):
the register tile's loop in the generated assembly, its FMAs and vector spills, llvm-mca's cycles per iteration
and the estimated fraction of the core's FMA peak (FMAs x the model's cycles per FMA / the loop's cycles). Static
estimates from LLVM's scheduling models (no caches, no memory stalls), not measurements; written to
BENCHMARKS.md as such.
"""

from __future__ import annotations

import argparse
import datetime
import sys

from atrous.pipeline.bench.compare import publish
from atrous.pipeline.bench.hot_loops import CPUS, HOT_KERNELS, assembly, estimated_peak, hot_loop, mca_cycles


def rows(cpus: list[str]) -> list[dict]:
    from tqdm import tqdm

    result = []
    for kernel in tqdm(HOT_KERNELS, unit="kernel"):
        for cpu in cpus:
            stats = hot_loop(assembly(kernel, cpu))
            result.append({"kernel": kernel.name, "cpu": cpu, "fmas": stats.fmas, "spills": stats.stack,
                           "registers": stats.registers, "cycles": mca_cycles(stats, cpu) if stats.fmas else None,
                           "peak": estimated_peak(stats, cpu)})
    return result


def markdown(table: list[dict], cpus: list[str]) -> str:
    import tvm

    lines = ["## Hot loops of the CPU kernels, static estimates by llvm-mca (`make bench-isa`)", "",
             f"{datetime.date.today().isoformat()}; TVM {tvm.__version__} (LLVM {_llvm()}), llvm-mca-19. Per kernel "
             "and CPU: FMAs in the register tile's loop (x86 `vfmadd*`, AArch64 `fmla`) on which vector registers, "
             "vector spills in it, llvm-mca's cycles per iteration, and the estimated fraction of the core's FMA "
             "peak (FMAs x llvm-mca's cycles per FMA of independent FMAs / the loop's cycles). LLVM's models, not "
             "measurements: e.g. its Zen 4 model charges a broadcast load an FP pipe slot (13x2 tiles at 67%), "
             "where the same loop measured 93-97% of the peak on a Zen 4; its cortex-a72 and cortex-a76 models "
             "give the same figures. Kernels: pipeline/bench/hot_loops.py.", "",
             "| kernel | " + " | ".join(cpus) + " |", "|---|" + "---:|" * len(cpus)]
    for kernel in dict.fromkeys(r["kernel"] for r in table):
        cells = []
        for cpu in cpus:
            r = next(x for x in table if x["kernel"] == kernel and x["cpu"] == cpu)
            spill = f", {r['spills']} spills" if r["spills"] else ""
            cycles = f"{r['cycles']:.0f} cyc" if r["cycles"] else "-"
            cells.append(f"{r['peak']:.0%} ({r['fmas']} FMA {r['registers']}, {cycles}{spill})")
        lines.append(f"| {kernel} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _llvm() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_version_major())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m atrous.pipeline.bench.isa", description=__doc__.splitlines()[0])
    p.add_argument("--cpus", default=",".join(CPUS), help="comma-separated LLVM CPUs (default: all of hot_loops)")
    p.add_argument("--out", default=None, help="add the markdown table at the top of this file (default: print only)")
    args = p.parse_args(argv)
    cpus = [c for c in args.cpus.split(",") if c]
    unknown = [c for c in cpus if c not in CPUS]
    if unknown:
        p.error(f"unknown CPU(s) {unknown}; known: {sorted(CPUS)}")
    publish(markdown(rows(cpus), cpus), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
