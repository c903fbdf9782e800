"""Choosing each 3x3 conv's algorithm (direct or Winograd F(2x2)/F(4x4), passes/winograd.py) by measurement.

Whether Winograd pays depends on the conv and the CPU: it trades 2.25x-4x fewer multiplications for input and
output transforms and copies, which cost more than they save on narrow convs, and its tiles round the map up (a
9x9 map is 12x12 of F(4x4) tiles). So ``atrous tune`` measures, on the device, every conv of the model the
rewrite could take: the conv alone, lowered each way, each kernel timed with the database's best record or else
its default schedule (the schedule ``compile`` would give it), summed. Timed with warm caches: in a model, each
kernel of the Winograd chain reads what the previous one just wrote. The times and the choice go to
``algorithms.json`` in the device's tuning database, reviewed and committed with it; ``compile`` applies them
(``winograd="auto"``, the default). A conv that was never measured gets the cost model below, which is also what an
untuned build (no database) uses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .passes.winograd import TRANSFORMS, Conv, conv_of, products_tile, tile_counts

TABLE = "algorithms.json"
DIRECT = "direct"
MARGIN = 1.05  # Winograd rounds differently from the direct sum: choose it only when measurably faster


def alternatives(conv: Conv) -> list[str]:
    """What a conv can be computed as: directly, or as F(m x m, 3 x 3) for each tile that fits its map."""
    return [DIRECT] + [f"winograd{m}" for m in sorted(TRANSFORMS) if conv.fits(m)]


def tile_of(name: str) -> int | None:
    return None if name == DIRECT else int(name.removeprefix("winograd"))


# --- the cost model: convs the database has not measured ------------------------------------------------------
# Fitted to the znver3 table (make algorithms-host, targets/tuning/host/znver3/algorithms.json): direct time over
# F(4x4) time was 1.3x-3.9x for every conv with C*K/(C+K) >= 80 (128->256 and wider) whose tiles save at least 2x
# of the multiplications; 0.95x-1.66x for 64-128 channels (a win only on maps of 129x129); 0.61x-1.05x for 64->64;
# 0.55x for 512 channels at rate 4 on 17x17 (each phase a 4x4 map: 0.75x the multiplications after rounding up).
# The transforms cost per tile in proportion to C + K; the products save in proportion to C * K.
MIN_SAVING = 2.0
WIDE = 80  # C*K/(C+K) from which F(4x4) pays on any map its tiles fit
MEDIUM, LARGE_MAP = 40, 8000  # ... and from which it pays on maps of at least this many outputs


def multiply_saving(conv: Conv, m: int, target) -> float:
    """Multiplications of the direct conv over those of the F(m x m) products, with the pass's tiles (rounded up
    per phase, and to whole register tiles of the products' schedule)."""
    rows, cols = tile_counts(conv.out_h, conv.out_w, conv.dilation, m, conv.batch,
                             products_tile(target, conv.out_channels))
    tiles = conv.dilation[0] * conv.dilation[1] * conv.batch * rows * cols
    return 9 * conv.batch * conv.out_h * conv.out_w / ((m + 2) ** 2 * tiles)


def cost_model(conv: Conv, target) -> int | None:
    """F(4x4) for convs wide enough for their map whose tiles waste little; otherwise direct."""
    if not conv.fits(4) or multiply_saving(conv, 4, target) < MIN_SAVING:
        return None
    width = conv.in_channels * conv.out_channels / (conv.in_channels + conv.out_channels)
    large = conv.out_h * conv.out_w >= LARGE_MAP
    return 4 if width >= WIDE or (width >= MEDIUM and large) else None


# The blocked layout's Winograd (passes/blocked_winograd.py) has cheaper transforms (vectorised over channel
# blocks, no layout copies) and tiles rounded per phase only. Measured on znver4, 2 threads, two 3x3 convs in a row
# (the second dilated) blocked F(4x4) against blocked direct: 256ch 33x33 1.5x (AVX-512) / 2.2x (AVX2 build),
# 512ch 17x17 2.3x / 2.1x, 128ch 65x65 3.2x / 2.3x, 64ch 33x33 1.5x / 3.4x, 64ch 65x65 1.1x / 0.85x, 32ch
# 33x33 2.0x / 1.4x (single runs on a shared machine: a guess for other CPUs, which `atrous tune` replaces).
BLOCKED_WIDTH = 32  # C*K/(C+K) from which blocked F(4x4) is taken untuned (64 -> 64 and wider)


def blocked_cost_model(conv: Conv, target) -> int | None:
    """F(4x4) for blocked convs at least 64 wide (C*K/(C+K) >= 32) whose tiles save at least 2x."""
    from .passes.blocked_winograd import fits, tiles

    if not fits((conv.out_h, conv.out_w), conv.dilation, 4):
        return None
    rows, cols = tiles(conv.out_h, conv.out_w, conv.dilation, 4)
    saving = 9 * conv.out_h * conv.out_w / (36 * conv.dilation[0] * conv.dilation[1] * rows * cols)
    width = conv.in_channels * conv.out_channels / (conv.in_channels + conv.out_channels)
    return 4 if saving >= MIN_SAVING and width >= BLOCKED_WIDTH else None


# --- the measured table ---------------------------------------------------------------------------------------
@dataclass
class Table:
    """{conv key: {alternative: seconds or None (failed), "choice": alternative}} of one device."""

    convs: dict = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path | None) -> Table:
        path = Path(directory) / TABLE if directory is not None else None
        return cls(json.loads(path.read_text())["convs"]) if path is not None and path.is_file() else cls()

    def save(self, directory: Path) -> None:
        path = Path(directory) / TABLE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"convs": self.convs}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def chooser(self, blocked: bool = True):
        """The Winograd pass's ``choose``: the measured choice, else the cost model of the layout."""
        model = blocked_cost_model if blocked else cost_model

        def choose(conv: Conv, target) -> int | None:
            entry = self.convs.get(conv.key())
            return tile_of(entry["choice"]) if entry else model(conv, target)
        return choose


def choice(times: dict) -> str:
    """The fastest alternative; Winograd only when at least MARGIN faster than direct."""
    timed = {name: s for name, s in times.items() if s is not None}
    if DIRECT not in timed:
        return min(timed, key=timed.get) if timed else DIRECT
    best = min(timed, key=timed.get)
    return best if best == DIRECT or timed[best] * MARGIN <= timed[DIRECT] else DIRECT


# --- measuring ------------------------------------------------------------------------------------------------
def candidate_convs(mod: tvm.IRModule, target, options) -> list[Conv]:
    """The distinct convs of ``mod`` (Relax, as imported) that reach the Winograd pass and that it could take, with
    at least 64 channels in and out (64->64 convs gained at most 5%, on a 257x257 map: narrower ones are left
    direct unmeasured)."""
    from .optimize import dilation_passes, inference_passes

    with target:
        mod = tvm.transform.Sequential(inference_passes() + dilation_passes(options)
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


def measure_conv(conv: Conv, preset, options, database, builder, runner) -> dict:
    """{alternative: seconds} of ``conv`` on the device: each lowering's kernels, timed with the database's best
    record or else their default schedule, times their weights, summed (None: a kernel failed)."""
    from .optimize import lower
    from .tune import extract_tasks

    base = replace(options, drop_dead_taps=False, partition_borders=False)  # the conv is already past them
    target, tasks = preset.tvm_target(), {}
    for name in alternatives(conv):
        m = tile_of(name)
        variant = (replace(base, winograd="off") if m is None
                   else replace(base, winograd=str(m), winograd_min_channels=1))
        tasks[name] = extract_tasks(lower(conv_module(conv), target, variant), preset)
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

    from .default_record import default_schedule, time_schedules
    from .tune import best_seconds, records_for

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


def table_text(entries: dict) -> str:
    """The measured alternatives of each conv, in milliseconds, and the choice."""
    names = [DIRECT] + [f"winograd{m}" for m in sorted(TRANSFORMS)]
    lines = [f"{'conv (NxCxHxW->K rate pad)':<40} " + " ".join(f"{n:>10}" for n in names) + "  choice"]
    for key, entry in entries.items():
        cells = [f"{1e3 * entry[n]:10.3f}" if entry.get(n) else f"{'-':>10}" for n in names]
        lines.append(f"{key:<40} " + " ".join(cells) + f"  {entry['choice']}")
    return "\n".join(lines)


def summary(mod: tvm.IRModule, database: Path | None) -> dict:
    """What the Winograd pass did to a lowered module's convs: {"F(4x4)": n, "F(2x2)": n, "direct": n,
    "measured": how many of those choices came from the database's measurements}."""
    from .passes.winograd import DECISIONS

    decisions = [str(d).rsplit(": ", 1) for d in (mod.attrs or {}).get(DECISIONS, [])]
    measured = Table.load(database).convs
    counts: dict = {}
    for _, m in decisions:
        name = "direct" if m == "0" else f"F({m}x{m})"
        counts[name] = counts.get(name, 0) + 1
    counts["measured"] = sum(1 for key, _ in decisions if key in measured)
    return counts if decisions else {}


def summary_text(counts: dict) -> str:
    """One line for compile's report."""
    if not counts:
        return "winograd: no 3x3 conv it applies to"
    convs = sum(v for k, v in counts.items() if k != "measured")
    rewritten = ", ".join(f"{v} as {k}" for k, v in sorted(counts.items()) if k.startswith("F("))
    return (f"winograd: {rewritten or 'none'} of {convs} 3x3 convs it applies to "
            f"({counts['measured']} chosen by measurement, {convs - counts['measured']} by the cost model)")
