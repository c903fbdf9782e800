"""The kernels of a lowered model as MetaSchedule tasks, the heaviest first (FLOPs x calls)."""

from __future__ import annotations

from tvm.s_tir import meta_schedule as ms

from atrous.pipeline.flops import tir_flops


def extract_tasks(mod, preset) -> list:
    tasks = ms.relax_integration.extract_tasks(mod, preset.tvm_target())
    return sorted(tasks, key=lambda t: -task_flops(t) * t.weight)


def task_flops(task) -> float:
    return tir_flops(task.dispatched[0])
