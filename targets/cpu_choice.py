"""A CPU preset built for another CPU of its architecture: ``atrous compile --target host --mcpu znver3``.

Fleets of another x86 CPU, a board with another ARM core, and the ISA comparisons (an AVX-512 machine runs and
times AVX2 builds too) need the same preset with another LLVM ``mcpu``. The result is a preset of its own name
(``host-znver3``: its own build directory), with the tuning database of that CPU (``targets/tuning/host/znver3``),
which runs here only if this machine's CPU has every feature the chosen one has.
"""

from __future__ import annotations

import functools

from atrous.pipeline.errors import AtrousError

from atrous.targets.preset import DevicePreset


def for_cpu(preset: DevicePreset, mcpu: str) -> DevicePreset:
    """``preset`` with LLVM CPU ``mcpu``; refuses non-CPU presets and names LLVM does not know for the target."""
    spec = preset.target_dict()
    if spec.get("kind") != "llvm":
        raise AtrousError(f"--mcpu picks the CPU of a CPU target; '{preset.name}' is a {spec.get('kind')} target")
    if mcpu == spec.get("mcpu"):
        return preset
    known = cpu_names(spec.get("mtriple"))
    if mcpu not in known:
        close = ([n for n in known if mcpu[:4] and n.startswith(mcpu[:4])] or known)[:12]
        raise AtrousError(f"LLVM knows no CPU '{mcpu}' for target '{preset.name}'; e.g. {', '.join(close)} "
                          "(all names: llc-19 -mtriple=<triple> -mcpu=help)")
    target = {**spec, "mcpu": mcpu}
    runs_here = preset.runs_here and features(target) <= features(spec)
    return preset.replace(name=f"{preset.name}-{mcpu}", summary=f"{preset.summary}, built for {mcpu}",
                          target=target, runs_here=runs_here, tuning_name=preset.tuning_name or preset.name)


@functools.lru_cache(maxsize=None)
def cpu_names(mtriple: str | None) -> list[str]:
    import tvm
    from tvm.target import codegen

    spec = {"kind": "llvm", **({"mtriple": mtriple} if mtriple else {})}
    return sorted(str(n) for n in codegen.llvm_get_cpu_archlist(tvm.target.Target(spec)))


def features(spec: dict) -> frozenset[str]:
    """The instruction-set features LLVM gives a CPU target (``avx512f``, ``fma``, ``neon``...). LLVM's list also
    holds tuning properties (``prefer-256-bit``, ``fast-gather``), which say nothing about what runs; those are
    the dashed names (except the dashed ISA families ``amx-*`` and ``avx10.*``) and ``ermsb``."""
    import tvm
    from tvm.target import codegen

    names = (str(f) for f in codegen.llvm_get_cpu_features(tvm.target.Target(spec)))
    return frozenset(n for n in names if ("-" not in n or n.startswith(("amx-", "avx10"))) and n != "ermsb")
