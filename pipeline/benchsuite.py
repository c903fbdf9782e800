"""``make bench``: every zoo model at its standard preset, measured side by side in one process, into BENCHMARKS.md.

For each model: atrous untuned (default schedules only), atrous tuned (the target's committed database, where it
has records for the model), PyTorch eager and ONNX Runtime, all with the same thread count on the same inputs.
Runtimes are timed in interleaved rounds (one run of each per round) so that drift on a shared machine hits all
of them alike; the table reports medians and ratios to ONNX Runtime. ``--variant OPTION=VALUE``
(``make bench VARIANT=winograd=off``) adds a column: atrous untuned with one ``OptimizeOptions`` field changed,
e.g. a rewrite switched off, measured in the same rounds as the default. GFLOP/s counts the direct convolution's
FLOPs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from .bench import publish
from .interface import CompileArgs, compile_model, require_ok, verify_model
from .optimize import OptimizeOptions
from .peak import fma_peak
from .threads import runtime_threads
from .tune import has_database


def _rounds(runners: dict, repeat: int) -> dict[str, list[float]]:
    for fn in runners.values():
        fn()  # warm-up
    seconds = {name: [] for name in runners}
    for _ in range(repeat):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def bench_model(name: str, preset, repeat: int, build_root: Path, variant: str = "") -> dict:
    import torch

    from models import count_flops
    from . import source
    from .reference import onnxruntime_session
    from .runner import CompiledModel

    src = source.from_zoo(name, "standard")
    threads = preset.target_dict().get("num-cores")
    untuned = compile_model(CompileArgs(src, preset, build_root / "untuned", tuned=False))
    tuned = untuned
    if has_database(preset.tuning_dir):
        tuned = compile_model(CompileArgs(src, preset, build_root / "tuned"))
    other = None
    if variant:  # untuned, with one option changed: its own column
        other = compile_model(CompileArgs(src, preset, build_root / variant.replace("=", "-"), tuned=False,
                                          options=variant_options(variant)))
    for artifact in dict.fromkeys(a for a in (untuned, tuned, other) if a is not None):  # each build once
        require_ok(verify_model(artifact, preset, second_reference=False))
    inputs, _ = untuned.load_golden()
    module = src.module()
    torch.set_num_threads(threads)
    args = [torch.from_numpy(v) for v in inputs.values()]
    session = onnxruntime_session(untuned.onnx, threads)
    runners = {"atrous untuned": CompiledModel(untuned).runner(inputs)}
    if tuned is not untuned and tuned.meta().tuned_tasks:
        runners["atrous tuned"] = CompiledModel(tuned).runner(inputs)
    if other is not None:
        runners[f"atrous {variant}"] = CompiledModel(other).runner(inputs)
    runners["pytorch"] = lambda: _torch_run(module, args)
    runners["onnxruntime"] = lambda: session.run(None, inputs)
    seconds = _rounds(runners, repeat)
    meta = tuned.meta()
    used = {"atrous": runtime_threads(), "pytorch": torch.get_num_threads(),
            "onnxruntime": session.get_session_options().intra_op_num_threads}
    return {"model": name, "gflop": count_flops(module, inputs) / 1e9, "threads": used,
            "tuned": f"{meta.tuned_tasks}/{meta.total_tasks}",
            "ms": {k: 1e3 * statistics.median(v) for k, v in seconds.items()}}


def _torch_run(module, args):
    import torch

    with torch.inference_mode():
        module(*args)


COLUMNS = ("atrous untuned", "atrous tuned", "pytorch", "onnxruntime")


def variant_options(variant: str) -> OptimizeOptions:
    """``OPTION=VALUE`` (a field of OptimizeOptions; booleans as true/false) -> the default options so changed."""
    import dataclasses

    key, _, value = variant.partition("=")
    fields = {f.name: f for f in dataclasses.fields(OptimizeOptions) if f.name != "database"}
    if key not in fields or not value:
        raise ValueError(f"--variant wants OPTION=VALUE with OPTION one of {sorted(fields)}, not {variant!r}")
    default = getattr(OptimizeOptions(), key)
    if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"--variant {key} takes true or false, not {value!r}")
        return OptimizeOptions(**{key: value.lower() == "true"})
    return OptimizeOptions(**{key: type(default)(value)})


def markdown(rows: list[dict], command: str, preset, repeat: int, peak_gflops: float) -> str:
    import onnxruntime
    import torch
    import tvm

    spec = preset.target_dict()
    threads = rows[0]["threads"] if rows else {}
    counts = ", ".join(f"{k} {v}" for k, v in threads.items())
    columns = COLUMNS + tuple(sorted({c for r in rows for c in r["ms"] if c not in COLUMNS}))
    lines = [
        f"## Host CPU, {threads.get('atrous', '?')} threads, fp32, batch 1 (`{command}`)",
        "",
        f"{datetime.date.today().isoformat()}; {_cpu_name()} (LLVM mcpu `{spec.get('mcpu')}`); TVM {tvm.__version__}, "
        f"PyTorch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}. Median of {repeat} interleaved "
        "rounds, milliseconds; in brackets, speed relative to ONNX Runtime (>1 is faster). A shared machine: "
        "compare ratios, not absolute times. GFLOP/s: the PyTorch model's conv and matmul FLOPs over atrous' "
        f"better time; in brackets, the share of this machine's fp32 FMA peak, measured before the models at "
        f"{peak_gflops:.0f} GFLOP/s on {threads.get('atrous', '?')} threads (pipeline/peak.py). Threads each "
        f"runtime used (read back from it): {counts}.",
        "",
        "| model | GFLOP | tuned kernels | " + " | ".join(columns) + " | atrous best GFLOP/s |",
        "|---|---:|---:|" + "---:|" * len(columns) + "---:|",
    ]
    for r in rows:
        ort = r["ms"]["onnxruntime"]
        cells = []
        for c in columns:
            ms = r["ms"].get(c)
            cells.append("-" if ms is None else f"{ms:.1f} ({ort / ms:.2f}x)")
        best = min(v for k, v in r["ms"].items() if k.startswith("atrous"))
        lines.append(f"| {r['model']} | {r['gflop']:.2f} | {r['tuned']} | " + " | ".join(cells)
                     + f" | {r['gflop'] / best * 1e3:.1f} ({r['gflop'] / best * 1e3 / peak_gflops:.0%}) |")
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    import targets
    from models import MODELS
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="python -m pipeline.benchsuite", description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models (default: all)")
    p.add_argument("--target", default="host")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--build-dir", default="build/bench")
    p.add_argument("--out", default=None, help="append the markdown table to this file (default: print only)")
    p.add_argument("--variant", default="", metavar="OPTION=VALUE",
                   help="add a column: untuned with one OptimizeOptions field changed (winograd=off, "
                        "transposed_phases=false, ...)")
    args = p.parse_args(argv)
    if args.variant:
        try:
            variant_options(args.variant)
        except ValueError as err:
            p.error(str(err))
    preset = targets.get_target(args.target)
    peak = fma_peak(preset.target_dict().get("num-cores") or os.cpu_count())
    rows = []
    names = [n for n in args.models.split(",") if n]
    for name in tqdm(names, unit="model"):
        rows.append(bench_model(name, preset, args.repeat, Path(args.build_dir), args.variant))
        tqdm.write(f"{name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in rows[-1]["ms"].items()))
    command = "make bench " + (f"MODELS={args.models} " if args.models != ",".join(MODELS) else "")
    command += f"VARIANT={args.variant}" if args.variant else ""
    text = markdown(rows, command.strip(), preset, args.repeat, peak)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
