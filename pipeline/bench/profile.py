"""Stage: where a compiled model spends its time, kernel by kernel (``atrous profile``).

The Relax VM calls an instrument before and after every call it makes. Timing each pair over a few runs gives every
kernel's share of a run; the VM's own builtins (allocation, shape checks, tuple handling) are summed as one row. A
device kernel is timed to completion (the device is synchronised after each call), so a GPU profile is slower than
an uninstrumented run but attributes time to the right kernel. The sum of the rows is reported next to the
instrumented run's wall time; the difference is the instrument's own cost (a Python call per VM call).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from atrous.pipeline.runner import CompiledModel

BUILTINS = "(vm builtins)"


@dataclass(frozen=True)
class KernelTime:
    name: str
    calls: int  # per run
    seconds: float  # per run, all calls, median over the runs
    flops: float | None = None  # per run, all calls (None: unknown, e.g. the VM's builtins)

    @property
    def gflops(self) -> float | None:
        return self.flops / self.seconds / 1e9 if self.flops and self.seconds > 0 else None

    def as_dict(self) -> dict:
        return {"kernel": self.name, "calls": self.calls, "ms": round(self.seconds * 1e3, 4), "flops": self.flops,
                "gflops": None if self.gflops is None else round(self.gflops, 2)}


@dataclass(frozen=True)
class Profile:
    kernels: tuple[KernelTime, ...]  # slowest first
    run_seconds: float  # median wall time of an instrumented run
    runs: int

    @property
    def kernel_seconds(self) -> float:
        return sum(k.seconds for k in self.kernels)

    @property
    def flops(self) -> float:
        return sum(k.flops or 0 for k in self.kernels)

    def as_dict(self) -> dict:
        return {"runs": self.runs, "run_ms": round(self.run_seconds * 1e3, 3), "flops": self.flops,
                "kernels": [k.as_dict() for k in self.kernels]}

    def table(self, top: int = 25, peak_gflops: float | None = None) -> str:
        """The slowest ``top`` kernels; with the machine's FMA peak (pipeline/bench/peak.py), GFLOP/s as its share."""
        total = self.kernel_seconds or 1.0

        def rate(flops, seconds):
            if not flops or seconds <= 0:
                return f"{'-':>8} {'':>5}"
            gflops = flops / seconds / 1e9
            return f"{gflops:>8.1f} {gflops / peak_gflops:>5.0%}" if peak_gflops else f"{gflops:>8.1f} {'':>5}"

        lines = [f"{'kernel':<52} {'calls':>5} {'ms/run':>9} {'share':>6} {'cumul':>6} {'GFLOP/s':>8} "
                 f"{'peak' if peak_gflops else '':>5}"]
        cumulative = 0.0
        for k in self.kernels[:top]:
            cumulative += k.seconds
            lines.append(f"{k.name[:52]:<52} {k.calls:>5} {k.seconds * 1e3:>9.3f} {k.seconds / total:>6.1%} "
                         f"{cumulative / total:>6.1%} {rate(k.flops, k.seconds)}")
        rest = self.kernels[top:]
        if rest:
            seconds = sum(k.seconds for k in rest)
            lines.append(f"{f'({len(rest)} more kernels)':<52} {sum(k.calls for k in rest):>5} "
                         f"{seconds * 1e3:>9.3f} {seconds / total:>6.1%} {1:>6.0%} "
                         f"{rate(sum(k.flops or 0 for k in rest), seconds)}")
        lines.append(f"sum of kernels {self.kernel_seconds * 1e3:.2f} ms per run; instrumented run "
                     f"{self.run_seconds * 1e3:.2f} ms (median of {self.runs}; the rest is the instrument's cost)")
        if self.flops:
            overall = self.flops / self.kernel_seconds / 1e9
            lines.append(f"kernels do {self.flops / 1e9:.2f} GFLOP per run (as lowered: skipped taps are not counted, "
                         f"padded tiles are): {overall:.1f} GFLOP/s"
                         + (f", {overall / peak_gflops:.0%} of the measured FMA peak ({peak_gflops:.0f} GFLOP/s)"
                            if peak_gflops else ""))
        else:
            lines.append("no FLOP counts in this artifact (built before they were recorded): recompile with --force")
        return "\n".join(lines)


def profile(model: CompiledModel, inputs: dict[str, np.ndarray], runs: int = 5) -> Profile:
    """Per-kernel times of ``runs`` runs of ``model`` on ``inputs`` (after one uninstrumented warm-up run)."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    run = model.runner(inputs)
    run()
    sync = model.device.sync if model.device.dlpack_device_type() != 1 else (lambda: None)  # 1: kDLCPU
    started: list[float] = []
    current: dict[str, list[float]] = defaultdict(list)

    def instrument(func, symbol, before, result, *args):
        if before:
            started.append(time.perf_counter())
        else:
            sync()
            name = BUILTINS if str(symbol).startswith("vm.builtin.") else str(symbol)
            current[name].append(time.perf_counter() - started.pop())
        return 0  # VMInstrumentReturnKind.NO_OP

    per_run: list[dict[str, list[float]]] = []
    walls = []
    model.vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            current.clear()
            start = time.perf_counter()
            run()
            sync()
            walls.append(time.perf_counter() - start)
            per_run.append(dict(current))
    finally:
        model.vm.set_instrument(None)  # uninstrumented again
    names = set().union(*per_run)
    flops = model.meta.kernel_flops
    kernels = []
    for name in names:
        calls = len(per_run[0].get(name, ()))
        kernels.append(KernelTime(name, calls, statistics.median(sum(r.get(name, ())) for r in per_run),
                                  flops[name] * calls if name in flops else None))
    kernels.sort(key=lambda k: -k.seconds)
    return Profile(tuple(kernels), statistics.median(walls), runs)
