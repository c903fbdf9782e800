"""How many threads TVM's CPU runtime uses, set explicitly and read back.

TVM's thread pool is created per calling thread, on its first parallel launch, with ``TVM_NUM_THREADS`` threads
if that is set and otherwise ``hardware_concurrency() / 2`` on x86 (it assumes every core has an SMT sibling).
On a machine without SMT that is half the cores: on the 2-core build machines every timing ran on one thread.
Once a thread's pool exists its size is fixed (``runtime.config_threadpool`` can only lower it), so the count has
to be in the environment before the first parallel kernel runs; ``use_threads`` puts it there and
``runtime_threads`` reads back what the pool really uses, which is what reports print.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "TVM_NUM_THREADS"


def physical_cores(cpus: set[int] | None = None, sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Cores this process may run on, SMT siblings counted once: the CPUs of the affinity mask grouped by
    (package, core id). Where the topology is not readable, every CPU of the mask counts."""
    cpus = set(os.sched_getaffinity(0)) if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def default_threads() -> int:
    """``ATROUS_THREADS`` if set, else the physical cores of the affinity mask."""
    if os.environ.get("ATROUS_THREADS"):
        return int(os.environ["ATROUS_THREADS"])
    return physical_cores()


def use_threads(count: int | None = None) -> int:
    """Ask TVM's runtime for ``count`` threads (default: ``default_threads()``) in every thread pool created from
    now on; a ``TVM_NUM_THREADS`` the user set is kept. Returns the count asked for."""
    count = count or default_threads()
    os.environ.setdefault(ENV, str(count))
    return int(os.environ[ENV])


def runtime_threads() -> int:
    """The threads TVM's pool of the calling thread really uses (creates the pool if it does not exist yet)."""
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())
