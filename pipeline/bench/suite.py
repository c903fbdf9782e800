"""``make bench``: every zoo model at its standard preset, measured side by side in one process, into BENCHMARKS.md.

For each model: atrous untuned (default schedules only) and tuned (the target's committed database for that
CPU, where it has records for the model), for the host's own CPU and, where this machine runs them, builds for
other CPUs (``--mcpu``: on an AVX-512 machine the AVX2 build ``znver3`` by default), PyTorch eager and ONNX
Runtime, on the same inputs, each with the thread count it reports using. Runtimes are timed in interleaved
rounds (one run of each per round) so that drift on a shared machine hits all of them alike; the table reports
medians and ratios to ONNX Runtime. ``--variant OPTION=VALUE`` (``make bench VARIANT=winograd=off``) adds a column:
atrous untuned with one ``OptimizeOptions`` field changed. A second table gives each model's weights, the native
build's library size, and the memory one run takes in atrous and in ONNX Runtime (pipeline/bench/memory.py). GFLOP/s
counts the direct convolution's FLOPs.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

from atrous.pipeline.bench.compare import publish
from atrous.pipeline.interface import CompileArgs, compile_model, require_ok, verify_model
from atrous.pipeline.optimize import OptimizeOptions
from atrous.pipeline.bench.peak import fma_peak
from atrous.pipeline.threads import runtime_threads
from atrous.pipeline.tuning.database import has_database


# Each runtime's worker threads spin for a while after a run (OpenMP in PyTorch, ONNX Runtime's and TVM's own
# pools) and took the cores from whichever runtime came next: measured on DeepLabV3-MobileNet, atrous ran 2x
# slower right after ONNX Runtime than alone. A pause between runs lets them go idle.
PAUSE_S = 0.2


def _rounds(runners: dict, repeat: int) -> dict[str, list[float]]:
    for fn in runners.values():
        fn()  # warm-up
    seconds = {name: [] for name in runners}
    for _ in range(repeat):
        for name, fn in runners.items():
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _builds(src, preset, label: str, build_root: Path) -> dict:
    """{column: artifact}: ``preset`` untuned, and tuned where its CPU has a database with records for the model."""
    untuned = compile_model(CompileArgs(src, preset, build_root / label / "untuned", tuned=False))
    builds = {f"atrous {label}": untuned}
    if has_database(preset.tuning_dir):
        tuned = compile_model(CompileArgs(src, preset, build_root / label / "tuned"))
        if tuned.meta().tuned_tasks:
            builds[f"atrous {label} tuned"] = tuned
    return builds


def bench_model(name: str, presets: dict, repeat: int, build_root: Path, variant: str = "",
                memory: bool = True) -> dict:
    """``presets``: {label: preset} of the CPU builds to time (the first is this machine's own)."""
    import torch

    from atrous.models import count_flops, count_params
    from atrous.pipeline import source
    from atrous.pipeline.bench.memory import measure
    from atrous.pipeline.reference import onnxruntime_session
    from atrous.pipeline.runner import CompiledModel

    src = source.from_zoo(name, "standard")
    native = next(iter(presets.values()))
    threads = native.target_dict().get("num-cores")
    builds = {}
    for label, preset in presets.items():
        builds.update(_builds(src, preset, label, build_root))
    if variant:  # untuned, with one option changed: its own column
        builds[f"atrous {variant}"] = compile_model(CompileArgs(src, native, build_root / variant.replace("=", "-"),
                                                                tuned=False, options=variant_options(variant)))
    for artifact in builds.values():
        require_ok(verify_model(artifact, native, second_reference=False))
    first = next(iter(builds.values()))
    inputs, _ = first.load_golden()
    module = src.module()
    torch.set_num_threads(threads)
    args = [torch.from_numpy(v) for v in inputs.values()]
    session = onnxruntime_session(first.onnx, threads)
    runners = {column: CompiledModel(artifact).runner(inputs) for column, artifact in builds.items()}
    runners["pytorch"] = lambda: _torch_run(module, args)
    runners["onnxruntime"] = lambda: session.run(None, inputs)
    seconds = _rounds(runners, repeat)
    used = {"atrous": runtime_threads(), "pytorch": torch.get_num_threads(),
            "onnxruntime": session.get_session_options().intra_op_num_threads}
    tuned = {c: f"{a.meta().tuned_tasks}/{a.meta().total_tasks}" for c, a in builds.items() if c.endswith("tuned")}
    row = {"model": name, "gflop": count_flops(module, inputs) / 1e9, "threads": used, "tuned": tuned,
           "ms": {k: 1e3 * statistics.median(v) for k, v in seconds.items()},
           "weights_mb": count_params(module) * 4 / 1e6, "library_mb": first.library.stat().st_size / 1e6}
    if memory:
        row["memory_mb"] = {"atrous": measure("atrous", first.root)["model_mb"],
                            "onnxruntime": measure("onnxruntime", first.onnx, first.golden_inputs)["model_mb"]}
    return row


def _torch_run(module, args):
    import torch

    with torch.inference_mode():
        module(*args)


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


def markdown(rows: list[dict], command: str, presets: dict, repeat: int, peak_gflops: float) -> str:
    import onnxruntime
    import torch
    import tvm

    threads = rows[0]["threads"] if rows else {}
    counts = ", ".join(f"{k} {v}" for k, v in threads.items())
    columns = list(dict.fromkeys(c for r in rows for c in r["ms"] if c.startswith("atrous")))
    columns += ["pytorch", "onnxruntime"]
    builds = ", ".join(f"`{label}` = LLVM mcpu `{p.target_dict().get('mcpu')}`" for label, p in presets.items())
    tuned_note = {c for r in rows for c in r["tuned"]}
    lines = [
        f"## Host CPU, {threads.get('atrous', '?')} threads, fp32, batch 1 (`{command}`)",
        "",
        f"{datetime.date.today().isoformat()}; {_cpu_name()}; builds: {builds}; TVM {tvm.__version__}, "
        f"PyTorch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}. Median of {repeat} interleaved "
        "rounds, milliseconds; in brackets, speed relative to ONNX Runtime (>1 is faster). A shared machine: "
        "compare ratios, not absolute times. GFLOP/s: the PyTorch model's conv and matmul FLOPs over atrous' "
        f"best time; in brackets, the share of this machine's fp32 FMA peak, measured before the models at "
        f"{peak_gflops:.0f} GFLOP/s on {threads.get('atrous', '?')} threads (pipeline/bench/peak.py). Threads each "
        f"runtime used (read back from it): {counts}."
        + (" Tuned columns: kernels with a record in the CPU's database, of all kernels, in the last column."
           if tuned_note else ""),
        "",
        "| model | GFLOP | " + " | ".join(columns) + " | atrous best GFLOP/s |"
        + (" tuned kernels |" if tuned_note else ""),
        "|---|---:|" + "---:|" * len(columns) + "---:|" + ("---|" if tuned_note else ""),
    ]
    for r in rows:
        ort = r["ms"]["onnxruntime"]
        cells = []
        for c in columns:
            ms = r["ms"].get(c)
            cells.append("-" if ms is None else f"{ms:.1f} ({ort / ms:.2f}x)")
        best = min(v for k, v in r["ms"].items() if k.startswith("atrous"))
        line = (f"| {r['model']} | {r['gflop']:.2f} | " + " | ".join(cells)
                + f" | {r['gflop'] / best * 1e3:.1f} ({r['gflop'] / best * 1e3 / peak_gflops:.0%}) |")
        if tuned_note:
            line += " " + ", ".join(f"{c.removeprefix('atrous ')} {n}" for c, n in r["tuned"].items()) + " |"
        lines.append(line)
    if rows and "memory_mb" in rows[0]:
        native = next(iter(presets))
        lines += ["", f"Size and memory (the `{native}` build): fp32 weights of the model, the compiled library "
                  "(`model.so`), and what one run adds to a process that has imported the runtime (peak resident "
                  "set minus the resident set before loading the model, each runtime in a process of its own: "
                  "pipeline/bench/memory.py).", "",
                  "| model | weights MB | model.so MB | library / weights | atrous run MB | onnxruntime run MB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['model']} | {r['weights_mb']:.1f} | {r['library_mb']:.1f} | "
                         f"{r['library_mb'] / r['weights_mb']:.2f} | {r['memory_mb']['atrous']:.0f} | "
                         f"{r['memory_mb']['onnxruntime']:.0f} |")
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_builds(target: str, mcpus: str | None) -> dict:
    """{label: preset}: this machine's build of ``target``, then one per other CPU in ``mcpus`` (comma-separated;
    None: znver3, the AVX2 build, when this machine has AVX-512 and runs it) that this machine can run."""
    from atrous import targets
    from atrous.targets.cpu_choice import features

    native = targets.get_target(target)
    presets = {"native": native}
    if mcpus is None:
        mcpus = "znver3" if "avx512f" in features(native.target_dict()) else ""
    for mcpu in filter(None, mcpus.split(",")):
        preset = targets.get_target(target, mcpu)
        if preset is not native and preset.runs_here:
            presets[mcpu] = preset
    return presets


def main(argv=None) -> int:
    from atrous.models import MODELS
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="python -m atrous.pipeline.bench.suite", description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models (default: all)")
    p.add_argument("--target", default="host")
    p.add_argument("--mcpus", default=None, metavar="CPU,...",
                   help="other CPUs to build for and time here (default: znver3 on an AVX-512 machine; '' for none)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--build-dir", default="build/bench")
    p.add_argument("--out", default=None, help="add the markdown table at the top of this file (default: print only)")
    p.add_argument("--no-memory", action="store_true", help="skip the run-memory measurements")
    p.add_argument("--variant", default="", metavar="OPTION=VALUE",
                   help="add a column: untuned with one OptimizeOptions field changed (winograd=off, "
                        "transposed_phases=false, ...)")
    args = p.parse_args(argv)
    if args.variant:
        try:
            variant_options(args.variant)
        except ValueError as err:
            p.error(str(err))
    presets = cpu_builds(args.target, args.mcpus)
    peak = fma_peak(runtime_threads())
    rows = []
    names = [n for n in args.models.split(",") if n]
    for name in tqdm(names, unit="model"):
        rows.append(bench_model(name, presets, args.repeat, Path(args.build_dir), args.variant,
                                memory=not args.no_memory))
        tqdm.write(f"{name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in rows[-1]["ms"].items()))
    command = "make bench " + (f"MODELS={args.models} " if args.models != ",".join(MODELS) else "")
    command += f"VARIANT={args.variant}" if args.variant else ""
    text = markdown(rows, command.strip(), presets, args.repeat, peak)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
