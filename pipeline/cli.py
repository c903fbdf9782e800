"""``atrous``: compile, verify, bench and list. A thin layer over ``interface``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from atrous.pipeline.errors import AtrousError

DEFAULT_MODEL = "deeplabv3-mobilenet"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """What names a model on a device: shared by every command that takes a model."""
    from atrous.pipeline.source import parse_shapes

    p.add_argument("model", help="zoo model name (atrous list models), an .onnx file, a torch.export .pt2 file, or "
                                 "FILE.py:FUNCTION returning an nn.Module (with --input-shape)")
    p.add_argument("--target", default="host", help="device preset (atrous list targets); default: host")
    p.add_argument("--mcpu", default=None, metavar="CPU",
                   help="CPU targets: build for this LLVM CPU instead of the preset's (e.g. znver3, skylake-avx512, "
                        "cortex-a76); its own build directory and tuning database")
    p.add_argument("--preset", default="standard", help="zoo model size preset: tiny or standard")
    p.add_argument("--input-shape", type=parse_shapes, default=None, metavar="NAME:1x3xHxW,...",
                   help="input shapes: of a FILE.py:FUNCTION module (required), or dynamic dimensions of an ONNX "
                        "file or .pt2 program")
    p.add_argument("--seed", type=int, default=0, help="seed of example inputs and zoo weights")
    p.add_argument("--database", default=None, metavar="DIR",
                   help="tuning database (default: the target's committed one, targets/tuning/<device>/<cpu>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--winograd", choices=("auto", "off", "2", "4"), default="auto",
                   help="CPU targets: 3x3 convs (dilated ones too) as Winograd F(NxN, 3x3), not bit-exact, verified "
                        "like everything. auto (default): per conv, as 'atrous tune' measured it, else by a cost "
                        "model; 2 or 4: every conv with >= 128 channels in and out; off")


def _add_compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build-dir", default=None, help="root of build outputs (default: ./build)")
    p.add_argument("--bundle", action="store_true",
                   help="also package the model with the on-device runtime (build/<model>/<target>/bundle)")
    p.add_argument("--force", action="store_true", help="recompile even if the artifact is up to date")
    p.add_argument("--untuned", action="store_true", help="ignore tuning databases (default schedules only)")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                   help="PyTorch models: torch.onnx's exporter (default: dynamo, the torch.export-based one, which "
                        "falls back to torchscript with the reason in the report)")
    p.add_argument("--precision", choices=("fp32", "int8", "fp16"), default="fp32",
                   help="int8: CPU presets, post-training static quantization by ONNX Runtime's quantizer "
                        "(per-channel int8 weights, per-tensor uint8 activations) and int8 kernels; a QDQ .onnx "
                        "file is compiled as int8 whatever this says (build/<model>/<target>-int8). fp16: GPU "
                        "presets (CUDA, Vulkan), activations and weights in float16, inputs and outputs float32 "
                        "(build/<model>/<target>-fp16; verified against fp32 by rel-L2, at most 1e-2)")
    p.add_argument("--calibration", default=None, metavar="DIR|N",
                   help="int8: calibrate activations on the .npy (one input) or .npz (one array per input) "
                        "samples in DIR, or on N seeded random inputs (default: 8; real data calibrates better)")
    p.add_argument("--min-sqnr", type=float, default=25.0, metavar="DB",
                   help="int8 verification: least SQNR against the fp32 original (default 25 dB)")
    p.add_argument("--max-steps", type=int, default=1, metavar="N",
                   help="int8 verification: most quantization steps any output element may differ from ONNX Runtime "
                        "running the same QDQ graph (default 1)")
    p.add_argument("--min-argmax", type=float, default=98.0, metavar="PCT",
                   help="int8 verification: least argmax agreement over axis 1 (classes) with the fp32 original, "
                        "in percent (default 98)")


def _options(args, preset):
    from pathlib import Path

    from atrous.pipeline.optimize import OptimizeOptions

    if args.winograd in ("2", "4") and preset.tvm_target().kind.name != "llvm":
        raise AtrousError(f"--winograd {args.winograd} rewrites convs for CPU targets; '{preset.name}' is a "
                          f"{preset.tvm_target().kind.name} target: drop the flag")
    return OptimizeOptions(database=Path(args.database) if args.database else None, winograd=args.winograd)


def _compile(args):
    from pathlib import Path

    from atrous import targets
    from atrous.pipeline import source
    from atrous.pipeline.interface import CompileArgs, compile_model

    preset = targets.get_target(args.target, args.mcpu)
    src = source.resolve(args.model, args.preset, args.input_shape, args.seed)
    start = time.perf_counter()
    from atrous.pipeline.quantize import Calibration

    artifact = compile_model(CompileArgs(src, preset, Path(args.build_dir) if args.build_dir else None,
                                         args.force, _options(args, preset), tuned=not args.untuned,
                                         exporter=args.exporter, precision=args.precision,
                                         calibration=Calibration.parse(args.calibration, args.seed)))
    if args.bundle or not preset.runs_here:  # the bundle is what goes to a device that is not this machine
        from atrous.pipeline.devices.bundle import make_bundle

        make_bundle(artifact, _criteria(args, artifact.meta().precision) or preset.tolerance)
    return src, preset, artifact, time.perf_counter() - start


def _criteria(args, precision: str):
    """The pass criteria of a reduced-precision build, from the command line (None for fp32)."""
    from atrous.pipeline.verify import Criteria

    if precision == "fp32":
        return None
    return Criteria(precision, min_sqnr_db=args.min_sqnr, min_argmax=args.min_argmax / 100, max_steps=args.max_steps)


def _tuning_line(meta) -> str:
    if not meta.database:
        line = f"untuned: default schedules for all {meta.total_tasks} kernels"
    else:
        line = (f"tuned {meta.tuned_tasks}/{meta.total_tasks} kernels from {meta.database}"
                f" ({meta.total_tasks - meta.tuned_tasks} fell back to default schedules)")
    from atrous.pipeline.tuning.algorithm_table import summary_text

    line += "\n" + _rewrites_line(meta.options)
    if meta.int8_kernels:
        line += f"\nint8 convs: {meta.int8_kernels}"
    if meta.exporter_fallback:
        line += f"\nexported by the TorchScript exporter: the dynamo exporter failed ({meta.exporter_fallback})"
    if meta.rule_failures:  # never fatal (schedules/guard.py), but each one is a kernel slower than it should be
        line += f"\nschedule rules that failed on {len(meta.rule_failures)} kernel(s) (please report them):"
        line += "".join(f"\n  {failure}" for failure in meta.rule_failures)
    cpu = meta.target_json.get("kind") == "llvm"
    return line + ("\n" + summary_text(meta.winograd) if cpu and meta.options.get("winograd", "off") != "off" else "")


def _rewrites_line(options: dict) -> str:
    """The graph rewrites a build was made with, as the OptimizeOptions switches that chose them."""
    on = [name for name, value in options.items() if value is True and name != "default_schedules"]
    if options.get("winograd", "off") != "off":
        on.append(f"winograd {options['winograd']}")
    if options.get("integer_convs", "off") != "off":
        on.append(f"integer_convs {options['integer_convs']}")
    return "rewrites: " + (", ".join(on) or "none")


def cmd_compile(args) -> int:
    src, preset, artifact, seconds = _compile(args)
    meta = artifact.meta()
    if args.json:
        print(json.dumps({"model": src.name, "target": preset.name, "artifact": str(artifact.root),
                          "seconds": round(seconds, 2), "database": meta.database,
                          "tuned_tasks": meta.tuned_tasks, "total_tasks": meta.total_tasks,
                          "options": meta.options, "winograd": meta.winograd}))
    else:
        print(f"compiled {src.name} for {preset.name} in {seconds:.1f} s -> {artifact.root}")
        print(_tuning_line(meta))
        _print_bundle(artifact)
    if args.emit_shaders:
        _print_device_code(artifact, preset)
    return 0


def _print_device_code(artifact, preset) -> None:
    device = artifact.root / "device"
    if not device.is_dir():
        raise AtrousError(f"target '{preset.name}' runs on the CPU: it has no device code (--emit-shaders is for "
                          "Vulkan and CUDA targets)")
    files = sorted(p for p in device.iterdir() if p.suffix in (".comp", ".cu"))
    print(f"device code in {device}: {len(files)} source file(s), compiled next to each")
    for path in files:
        print(f"  {path.name}")


def _print_bundle(artifact) -> None:
    from atrous.pipeline.devices.bundle import bundle_dir

    tar = artifact.root / "bundle.tar.gz"
    if bundle_dir(artifact).is_dir() and tar.is_file():
        print(f"bundle: {bundle_dir(artifact)} ({tar.name}, {tar.stat().st_size / 1e6:.1f} MB): copy it to the "
              "device and run ./run.sh there")


def cmd_tune(args) -> int:
    from pathlib import Path

    from atrous import targets
    from atrous.pipeline import source
    from atrous.pipeline.tuning.measure import measurement_for
    from atrous.pipeline.tuning.tune import TuneArgs, tune_model

    preset = targets.get_target(args.target, args.mcpu)
    src = source.resolve(args.model, args.preset, args.input_shape, args.seed)
    database = Path(args.database) if args.database else None
    builder, runner = measurement_for(preset, args.device)
    report = tune_model(TuneArgs(src, preset, args.trials, _options(args, preset), database=database, runner=runner,
                                 builder=builder, algorithms_only=args.algorithms_only), progress=not args.json)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"tune {src.name} on {preset.name}: {report.new_trials} new trials")
        print(report.table())
    return 0


def _checks_json(result) -> list[dict]:
    return [{"output": c.name, "reference": c.reference, "max_abs": c.max_abs, "rel_l2": c.rel_l2, "ok": c.ok,
             "problem": c.problem, "sqnr_db": c.sqnr_db, "argmax": c.argmax, "steps": c.steps}
            for c in result.checks]


def cmd_verify(args) -> int:
    from atrous.pipeline.interface import require_ok, verify_model
    from atrous.pipeline.verify import report

    src, preset, artifact, _ = _compile(args)
    result = verify_model(artifact, preset, device=args.device, criteria=_criteria(args, artifact.meta().precision))
    if args.json:
        print(json.dumps({"model": src.name, "target": preset.name, "device": result.device, "ok": result.ok,
                          "checks": _checks_json(result),
                          "notes": list(result.notes)}))
    else:
        print(f"verify {src.name} on {preset.name}, run on {result.device} ({artifact.root})")
        print(report(result.checks, result.tolerance, result.notes))
        _print_bundle(artifact)
    require_ok(result)
    return 0


def _timing_problem(preset) -> str | None:
    """Why timing ``preset`` on this machine would mean nothing, or None when its timings are real."""
    if not preset.runs_here:
        where = (f"make gpu-pack GPU={preset.name}, then python3 gpu_check.py on the GPU machine"
                 if preset.family == "cuda" else "bundle/run.sh --repeat 20 on the device")
        return (f"this machine cannot run '{preset.name}' natively (emulated timings mean nothing); "
                f"run {where} instead")
    if preset.family == "vulkan":
        from atrous.pipeline.devices.vulkan.backend import device_info

        device = device_info()
        if device.get("type") == "cpu":
            return (f"the Vulkan device here is {device['name']}, a CPU implementation of Vulkan: its timings are "
                    "not GPU numbers; time it on a machine with a Vulkan GPU (ATROUS_VULKAN_DEVICE picks one)")
    return None


def _require_local(preset, job: str) -> None:
    problem = _timing_problem(preset)
    if problem:
        raise AtrousError(f"'{job}' times the model on this machine, but {problem}")


def cmd_bench(args) -> int:
    from atrous import targets
    from atrous.pipeline.bench.compare import bench, table

    _require_local(targets.get_target(args.target, args.mcpu), "bench")  # before compiling: say so at once
    src, preset, artifact, _ = _compile(args)
    threads = preset.target_dict().get("num-cores") or os.cpu_count()
    rows = bench(artifact, src.module() if src.module_factory else None, threads, args.repeat)
    if args.json:
        print(json.dumps({"model": src.name, "target": preset.name, "threads": threads,
                          "timings": [r.as_dict() for r in rows]}))
    else:
        print(f"bench {src.name} on {preset.name}, {args.repeat} runs each (threads: what each runtime used)")
        print(table(rows))
    return 0


def cmd_profile(args) -> int:
    from atrous import targets
    from atrous.pipeline.bench.profile import profile
    from atrous.pipeline.runner import CompiledModel

    _require_local(targets.get_target(args.target, args.mcpu), "profile")
    src, preset, artifact, _ = _compile(args)
    model = CompiledModel(artifact)
    result = profile(model, artifact.load_golden()[0], args.repeat)
    threads, peak = model.threads, None
    if preset.family == "cpu":  # the yardstick for GFLOP/s: the FMA units of as many cores as the kernels used
        from atrous.pipeline.bench.peak import fma_peak

        peak = fma_peak(threads)
    if args.json:
        print(json.dumps({"model": src.name, "target": preset.name, "threads": threads, "peak_gflops": peak,
                          **result.as_dict()}))
    else:
        print(f"profile {src.name} on {preset.name} ({artifact.root}), {args.repeat} runs, {threads} threads")
        print(_tuning_line(artifact.meta()))
        print(result.table(args.top, peak))
        if artifact.meta().precision == "int8" and peak:
            print("(int8 build: 'peak' is the fp32 FMA peak; an int8 dot-product instruction does 4x its "
                  "multiply-adds, so int8 kernels can pass 100%)")
    return 0


def cmd_run(args) -> int:
    """The main job: compile, verify and bench the model, with one report."""
    from atrous.pipeline.bench.compare import bench, table
    from atrous.pipeline.interface import require_ok, verify_model
    from atrous.pipeline.verify import report

    src, preset, artifact, seconds = _compile(args)
    result = verify_model(artifact, preset, device=args.device, criteria=_criteria(args, artifact.meta().precision))
    print(f"== {src.name} ({src.description}) on {preset.name}")
    print(f"compiled in {seconds:.1f} s; artifact: {artifact.root}")
    print(_tuning_line(artifact.meta()))
    _print_bundle(artifact)
    print(f"-- verification (ran on {result.device})")
    print(report(result.checks, result.tolerance, result.notes))
    problem = "it ran on a device" if args.device else _timing_problem(preset)
    if problem is None:
        threads = preset.target_dict().get("num-cores") or os.cpu_count()
        rows = bench(artifact, src.module() if src.module_factory else None, threads, args.repeat)
        print(f"-- latency, median of {args.repeat} runs (same process, same inputs; threads: what each used)")
        print(table(rows))
    else:
        print(f"-- latency: not measured here ({problem}); on the device: bundle/run.sh --repeat 20")
    require_ok(result)
    return 0


def cmd_runtime(args) -> int:
    from pathlib import Path

    from atrous.pipeline.devices.runtime_build import build_runtime

    runtime = build_runtime(args.arch, Path(args.build_dir) if args.build_dir else None)
    sizes = runtime.size_bytes()
    if args.json:
        print(json.dumps({"arch": runtime.arch, "root": str(runtime.root), "bytes": sizes}))
        return 0
    print(f"on-device runtime for {runtime.arch}: {runtime.root}")
    for name, size in sizes.items():
        print(f"  {name:<28} {size / 1e6:6.2f} MB")
    print(f"  {'total':<28} {sum(sizes.values()) / 1e6:6.2f} MB")
    return 0


def cmd_list(args) -> int:
    from atrous.pipeline.listing import list_models, list_targets

    rows = list_models(args.json) if args.what == "models" else list_targets(args.json)
    print(json.dumps(rows, indent=2) if args.json else rows)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atrous", description="Compile, verify and benchmark atrous-convolution "
                                "networks with TVM for edge devices.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, text in (("compile", cmd_compile, "compile a model for a device"),
                           ("verify", cmd_verify, "compile if needed, run, and compare with PyTorch/ONNX Runtime"),
                           ("bench", cmd_bench, "time the compiled model next to PyTorch and ONNX Runtime"),
                           ("run", cmd_run, "compile, verify and bench in one report (the main job)"),
                           ("profile", cmd_profile, "time each kernel of the compiled model on this machine")):
        sp = sub.add_parser(name, help=text, description=text)
        _add_model_args(sp)
        _add_compile_args(sp)
        if fn is cmd_compile:
            sp.add_argument("--emit-shaders", action="store_true",
                            help="list the generated GPU device code (Vulkan GLSL/SPIR-V, CUDA C/cubin) kept in "
                                 "build/<model>/<target>/device/")
        if fn in (cmd_bench, cmd_run, cmd_profile):
            sp.add_argument("--repeat", type=_positive, default=10 if fn is not cmd_profile else 5,
                            help="timed runs" + ("" if fn is cmd_profile else " per runtime"))
        if fn is cmd_profile:
            sp.add_argument("--top", type=_positive, default=25, help="kernels listed (the rest are summed)")
        if fn in (cmd_verify, cmd_run):
            sp.add_argument("--device", default=None, metavar="URL",
                            help="where to run: ssh://user@host, rpc://host:port[/key], tracker://host:port/key "
                                 "(default: this machine, or the target's emulator)")
        sp.set_defaults(func=fn)
    sp = sub.add_parser("tune", help="tune the model's kernels into the target's database (resumable)",
                        description="MetaSchedule tuning: each kernel gets up to --trials measured candidates; "
                        "records go to the target's database (targets/tuning/<device>/<cpu>), which compile "
                        "applies. On CPU targets each wide 3x3 conv is first timed direct and as Winograd, and "
                        "the faster kept (algorithms.json). Interrupt at any time; a re-run continues where it "
                        "stopped.")
    _add_model_args(sp)
    sp.add_argument("--trials", type=_non_negative, default=64,
                    help="trials per kernel (0: only report what the database holds)")
    sp.add_argument("--algorithms-only", action="store_true",
                    help="only time each conv direct vs Winograd (minutes, not hours) and keep the faster")
    sp.add_argument("--device", default=None, metavar="tracker://HOST:PORT/KEY",
                    help="measure on a board registered with a TVM RPC tracker (needed for targets that do not "
                         "run on this machine)")
    sp.set_defaults(func=cmd_tune)
    sp = sub.add_parser("runtime", help="build the on-device runtime library for an architecture",
                        description="Build runtime/ (C API, atrous-run, atrous-rpc-server) with CMake against the "
                        "TVM runtime of the pinned wheels, into <build-dir>/runtime/<arch>.")
    sp.add_argument("--arch", default=None, help="x86_64 or aarch64 (default: this machine's)")
    sp.add_argument("--build-dir", default=None, help="root of build outputs (default: ./build)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_runtime)
    sp = sub.add_parser("list", help="list zoo models or device presets")
    sp.add_argument("what", choices=("models", "targets"))
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_list)
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or a positive integer")
    return value


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except AtrousError as err:
        if err.__cause__ is not None and os.environ.get("ATROUS_DEBUG"):
            traceback.print_exception(err.__cause__)
        print(f"atrous: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("atrous: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
