"""Choosing each 3x3 conv's algorithm (direct or Winograd F(2x2)/F(4x4), passes/winograd.py) by measurement.

Whether Winograd pays depends on the conv and the CPU: it trades 2.25x-4x fewer multiplications for input and
output transforms and copies, which cost more than they save on narrow convs, and its tiles round the map up (a
9x9 map is 12x12 of F(4x4) tiles). So ``atrous tune`` measures, on the device, every conv of the model the
rewrite could take: the conv alone, lowered each way, each kernel timed with the database's best record or else
its default schedule (the schedule ``compile`` would give it), summed. Timed with warm caches: in a model, each
kernel of the Winograd chain reads what the previous one just wrote. The times and the choice go to
``algorithms.json`` in the device's tuning database (algorithm_table.py), reviewed and committed with it;
``compile`` applies them (``winograd="auto"``, the default).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from atrous.pipeline.tuning.algorithm_table import Table, alternatives, choice, tile_of
from atrous.pipeline.passes.winograd import Conv, conv_of


def candidate_convs(mod: tvm.IRModule, target, options) -> list[Conv]:
    """The distinct convs of ``mod`` (Relax, as imported) that reach the Winograd pass and that it could take, with
    at least 64 channels in and out (64->64 convs gained at most 5%, on a 257x257 map: narrower ones are left
    direct unmeasured)."""
    from atrous.pipeline.optimize import dilation_passes, inference_passes

    with target:
        mod = tvm.transform.Sequential(inference_passes(options) + dilation_passes(options)
                                       + [relax.transform.FoldConstant()])(mod)
    found: dict[str, Conv] = {}

    def visit(expr):
        if isinstance(expr, relax.Call):
            conv = conv_of(expr)
            if conv is not None and min(conv.in_channels, conv.out_channels) >= 64 and len(alternatives(conv)) > 1:
                found.setdefault(conv.key(), conv)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return list(found.values())


def conv_module(conv: Conv, seed: int = 0) -> tvm.IRModule:
    """The conv alone, over a random constant weight (timings do not depend on the values)."""
    weight = np.random.default_rng(seed).standard_normal((conv.out_channels, conv.in_channels, 3, 3))
    x = relax.Var("x", relax.TensorType((conv.batch, conv.in_channels, conv.height, conv.width), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, relax.const(weight.astype("float32")),
                                                  padding=list(conv.padding), dilation=list(conv.dilation)))
        bb.emit_func_output(y)
    return bb.get()


def lowered_alternatives(conv: Conv, target, options) -> dict:
    """{alternative: the conv alone, lowered that way (fused TensorIR, unscheduled)}."""
    from atrous.pipeline.optimize import lower

    # the conv was taken after the graph's dilation passes (its dead taps dropped, and in the NCHW layout its
    # border bands already cut); in the blocked layout the bands are cut when it is lowered, as in the model, so
    # its direct alternative keeps them (measured without them, a dilated conv's direct time was its slowest)
    base = replace(options, drop_dead_taps=False,
                   partition_borders=options.partition_borders and options.blocked_layout)
    lowered = {}
    for name in alternatives(conv):
        m = tile_of(name)
        variant = (replace(base, winograd="off") if m is None
                   else replace(base, winograd=str(m), winograd_min_channels=1))
        lowered[name] = lower(conv_module(conv), target, variant)
    return lowered


def measure_conv(conv: Conv, preset, options, database, builder, runner) -> dict:
    """{alternative: seconds} of ``conv`` on the device: each lowering's kernels, timed with the database's best
    record or else their default schedule, times their weights, summed (None: a kernel failed)."""
    from atrous.pipeline.tuning.tasks import extract_tasks

    target = preset.tvm_target()
    tasks = {name: extract_tasks(mod, preset) for name, mod in lowered_alternatives(conv, target, options).items()}
    # every alternative's kernels in one batch: the builder's workers start once
    seconds = iter(kernel_seconds([t for ts in tasks.values() for t in ts], target, database, builder, runner,
                                  options))
    times = {}
    for name, kernels in tasks.items():
        timed = [next(seconds) for _ in kernels]
        times[name] = None if None in timed else sum(s * int(t.weight) for s, t in zip(timed, kernels))
    return times


def kernel_seconds(tasks: list, target, database, builder, runner, options=None) -> list[float | None]:
    """Each task's best recorded time in ``database``, else its default schedule's, measured now (one batch)."""
    from tvm import s_tir

    from atrous.pipeline.tuning.default_record import default_schedule, time_schedules
    from atrous.pipeline.tuning.database import best_seconds, records_for

    seconds = [best_seconds(records_for(database, t)) if database is not None else None for t in tasks]
    todo = [i for i, s in enumerate(seconds) if s is None]
    schedules = [default_schedule(tasks[i], target, options) or s_tir.Schedule(tasks[i].dispatched[0])
                 for i in todo]
    for i, (run_secs, _) in zip(todo, time_schedules(schedules, target, builder, runner) if todo else []):
        seconds[i] = sum(run_secs) / len(run_secs) if run_secs else None
    return seconds


def choose_algorithms(mod: tvm.IRModule, preset, options, directory: Path, database, builder, runner,
                      progress: bool = True) -> dict:
    """Measure the convs of ``mod`` that ``directory``'s table lacks and add them to it; return the table's
    entries for the convs of ``mod``."""
    from tqdm import tqdm

    table = Table.load(directory)
    convs = candidate_convs(mod, preset.tvm_target(), options)
    todo = [c for c in convs if c.key() not in table.convs]
    for conv in tqdm(todo, unit="conv", desc="direct vs Winograd", disable=not progress or not todo,
                     dynamic_ncols=True):
        times = measure_conv(conv, preset, options, database, builder, runner)
        table.convs[conv.key()] = {**times, "choice": choice(times)}
        table.save(directory)  # one conv at a time: an interrupt keeps what was measured
    return {c.key(): table.convs[c.key()] for c in convs}
