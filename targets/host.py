"""The build machine's own CPU (x86_64 or aarch64 Linux).

The LLVM CPU name is read from LLVM's host detection, not assumed: a binary built for ``znver4`` (AVX-512) dies
with SIGILL on a ``znver3`` machine, and the project's machines vary. ``mcpu: native`` is rejected by the LLVM in
the TVM wheel, so the detected name is written into the target explicitly.
"""

from __future__ import annotations

import functools
import os

from atrous.targets.preset import DevicePreset


@functools.lru_cache(maxsize=None)
def host_cpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def host_threads() -> int:
    """Physical cores available to this process (CPU affinity, SMT siblings once; ATROUS_THREADS overrides)."""
    from atrous.pipeline.threads import default_threads

    return default_threads()


def _host_target() -> dict:
    return {"kind": "llvm", "mcpu": host_cpu(), "num-cores": host_threads()}


HOST = DevicePreset(
    name="host",
    summary="this machine's CPU (LLVM, detected mcpu, all cores)",
    family="cpu",
    target=_host_target,
    runtime_arch=os.uname().machine,
)

PRESETS = (HOST,)
