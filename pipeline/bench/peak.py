"""The machine's measured fp32 FMA peak, the yardstick for GFLOP/s in ``make bench`` and ``atrous profile``.

``pipeline/fma_peak.c`` runs ten independent chains of vector FMAs held in registers (no memory traffic), so its
rate is what the cores' FMA units can do, not what any real kernel reaches. It is built once with the host C
compiler for this CPU (``-march=native``) and run on ``threads`` threads at once (ctypes releases the GIL), the
best of a few rounds, each long enough (~0.2 s) to reach the clock the cores hold under load.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import shutil
import subprocess
import threading
import time
from pathlib import Path

from atrous.pipeline import artifact as art
from atrous.pipeline.errors import ToolchainError

SOURCE = Path(__file__).with_name("fma_peak.c")
FLAGS = ("-O2", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC")


def _library(build_root: Path) -> ctypes.CDLL:
    compiler = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if compiler is None:
        raise ToolchainError("measuring the FMA peak needs a C compiler; install it with: sudo apt-get install gcc")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((compiler, *FLAGS)).encode()).hexdigest()[:12]
    out = Path(build_root) / "peak" / f"fma_peak-{key}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial-{threading.get_native_id()}")
        done = subprocess.run([compiler, *FLAGS, "-o", str(partial), str(SOURCE)], capture_output=True, text=True)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ToolchainError(f"building {SOURCE.name} failed: {done.stderr.strip()}")
        partial.replace(out)  # atomic: a concurrent build writes the same bytes
    lib = ctypes.CDLL(str(out))
    lib.fma_run.argtypes = [ctypes.c_long, ctypes.c_float, ctypes.c_float]
    lib.fma_run.restype = ctypes.c_float
    return lib


def _round(lib, threads: int, iters: int) -> float:
    """Seconds for ``threads`` threads running ``iters`` iterations each, all at once."""
    workers = [threading.Thread(target=lib.fma_run, args=(iters, 0.999, 0.001)) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


@functools.lru_cache(maxsize=None)
def fma_peak(threads: int, rounds: int = 3, seconds: float = 0.2, build_root: Path = art.BUILD_ROOT) -> float:
    """fp32 GFLOP/s of ``threads`` cores doing nothing but FMAs (an FMA counts as two FLOPs)."""
    if threads < 1:
        raise ValueError("threads must be >= 1")
    lib = _library(build_root)
    flops_per_iter = 2 * lib.fma_lanes() * lib.fma_chains()
    iters = 100_000
    elapsed = _round(lib, 1, iters)
    iters = max(iters, int(iters * seconds / max(elapsed, 1e-6)))
    best = min(_round(lib, threads, iters) for _ in range(rounds))
    return threads * iters * flops_per_iter / best / 1e9
