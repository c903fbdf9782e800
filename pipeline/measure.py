"""How tuning builds and measures candidates: MetaSchedule builders and runners for a device preset.

MetaSchedule's stock ``LocalBuilder`` starts fresh worker processes for every batch and its default build function
imports ``tvm.s_tir.tensor_intrin``, which registers every tensor intrinsic TVM knows and takes ~30 s on this
class of machine: past the builder's timeout, so every candidate "fails". ``build_candidate`` does the same build
without that import (CPU schedules from the default design space use no tensor intrinsics), so a worker is ready
in the ~3 s that ``import tvm`` takes.
"""

from __future__ import annotations

import os

from tvm.s_tir import meta_schedule as ms

BUILD_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 30.0


def build_candidate(mod, target, _params):
    """MetaSchedule's default build, minus the tensor-intrinsic import (runs in the builder's worker)."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return build(mod, target=target)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_builder(workers: int | None = None) -> ms.builder.LocalBuilder:
    """Candidate builds in parallel on this machine's cores."""
    return ms.builder.LocalBuilder(max_workers=workers or usable_cores(), timeout_sec=BUILD_TIMEOUT_S,
                                   f_build=build_candidate)


def evaluator(repeat: int = 3, min_repeat_ms: int = 50) -> ms.runner.EvaluatorConfig:
    """Each candidate: ``repeat`` timings of at least ``min_repeat_ms``, CPU caches flushed between them."""
    return ms.runner.EvaluatorConfig(number=1, repeat=repeat, min_repeat_ms=min_repeat_ms,
                                     enable_cpu_cache_flush=True)


def local_runner() -> ms.runner.LocalRunner:
    """Measure on this machine, one candidate at a time (timings must not share the cores)."""
    return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=evaluator())
