"""``make bench-pointwise``: each 1x1 conv kernel PixelConv takes, timed against what the same model gets with
``pixel_conv=false`` (PadToTiles + PackedConv), kernels alone, interleaved in one process, into BENCHMARKS.md.

The whole-model effect is ``make bench VARIANT=pixel_conv=false``; this table shows where it comes from, kernel by
kernel (the figures quoted in schedules/pixel_conv.py and README come from it)."""

from __future__ import annotations

import argparse
import datetime
import statistics

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms

from atrous.pipeline.bench.compare import publish
from atrous.pipeline.optimize import OptimizeOptions
from atrous.pipeline.schedules import default_rules
from atrous.pipeline.schedules.pixel_conv import PixelConv
from atrous.pipeline.tuning.tune import lowered_module

ROUNDS = 7


def _kernels(source, preset, options) -> dict:
    mod = lowered_module(source, preset, options)
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def _shapes(func) -> list[tuple]:
    return [tuple(int(d) for d in a.shape) for a in ms.arg_info.ArgInfo.from_prim_func(func)]


def _build(func, target, options):
    for rule in default_rules(target, options):
        sch = rule.apply(func, target, False)
        if sch is not None:
            kernel = tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")})
            return type(rule).__name__, tvm.compile(kernel, target=target)
    raise ValueError("no default rule takes the kernel")


def _args(func, rng) -> list:
    return [tvm.runtime.tensor(rng.standard_normal(shape).astype("float32")) for shape in _shapes(func)]


def bench_model(name: str, preset) -> list[dict]:
    from atrous.pipeline import source

    src, target = source.from_zoo(name, "standard"), preset.tvm_target()
    off = OptimizeOptions(pixel_conv=False)
    new, old = _kernels(src, preset, OptimizeOptions()), _kernels(src, preset, off)
    rng, rows = np.random.default_rng(0), []
    for kernel, func in new.items():
        if PixelConv().apply(func, target, False) is None:
            continue
        data, weight = _shapes(func)[:2]
        # the same conv as lowered without PixelConv: same input, same reduction (PadToTiles may add filters)
        twins = [f for f in old.values() if _shapes(f)[:1] == [data] and len(_shapes(f)) > 1
                 and _shapes(f)[1][1:] == weight[1:] and _shapes(f)[1][0] >= weight[0]]
        if not twins:
            continue
        twin = [min(twins, key=lambda f: _shapes(f)[1][0])]  # the fewest filters: this conv's, padded or not
        timed = {}
        (rule, lib), (old_rule, old_lib) = _build(func, target, OptimizeOptions()), _build(twin[0], target, off)
        inputs = {rule: _args(func, rng), old_rule: _args(twin[0], rng)}
        for _ in range(ROUNDS):
            for which, built in ((rule, lib), (old_rule, old_lib)):
                seconds = built.mod.time_evaluator("main", tvm.cpu(), number=10)(*inputs[which]).mean
                timed.setdefault(which, []).append(seconds)
        rows.append({"model": name, "kernel": kernel, "conv": f"{weight[1]} -> {weight[0]}",
                     "pixels": int(np.prod(data[2:])), "old": old_rule,
                     "old_ms": 1e3 * statistics.median(timed[old_rule]), "new_ms": 1e3 * statistics.median(timed[rule])})
    return rows


def table(rows: list[dict], models: list[str]) -> str:
    head = (f"## 1x1 conv kernels alone: PixelConv vs `pixel_conv=false`, host CPU "
            f"(`make bench-pointwise MODELS={','.join(models)}`)\n\n"
            f"{datetime.date.today()}; median of {ROUNDS} interleaved rounds of 10 runs, milliseconds, the "
            "kernel's threads on all cores. Each kernel PixelConv takes, against the same conv as lowered with "
            "`pixel_conv=false` (PadToTiles' padded rows and filters, PackedConv). Kernels called several times "
            "in the model count once.\n\n"
            "| model | kernel | conv | pixels | pixel_conv=false | PixelConv | speed-up |\n"
            "|---|---|---|---:|---:|---:|---:|\n")
    lines = [f"| {r['model']} | {r['kernel'][:40]} | {r['conv']} | {r['pixels']} | {r['old_ms']:.3f} | "
             f"{r['new_ms']:.3f} | {r['old_ms'] / r['new_ms']:.2f}x |" for r in rows]
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        if mine:
            old, new = sum(r["old_ms"] for r in mine), sum(r["new_ms"] for r in mine)
            lines.append(f"| {model} | all {len(mine)} | | | {old:.3f} | {new:.3f} | {old / new:.2f}x |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from atrous import targets

    p = argparse.ArgumentParser(prog="python -m atrous.pipeline.bench.pointwise", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="deeplabv3-mobilenet,deeplabv3-resnet,wavenet")
    p.add_argument("--target", default="host")
    p.add_argument("--out", default=None, help="add the table at the top of this markdown file (BENCHMARKS.md)")
    args = p.parse_args(argv)
    preset = targets.get_target(args.target)
    models = [m for m in args.models.split(",") if m]
    rows = [row for model in models for row in bench_model(model, preset)]
    publish(table(rows, models), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
