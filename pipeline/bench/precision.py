"""``make bench PRECISION=int8``: int8 against fp32, atrous against ONNX Runtime, side by side in one process.

For each zoo model at its standard preset, on this machine's CPU (and, on an AVX-512 machine, the AVX2 build
``znver3``): atrous fp32 (untuned), atrous int8 (the QDQ graph quantized here, untuned), ONNX Runtime fp32 on the
float graph and ONNX Runtime int8 on the very same QDQ graph, timed in interleaved rounds (suite.py), with the
thread count each reports. Beside the times: each build's library size (the weights are in it: int8 weights are a
quarter of fp32's), the int8 build's SQNR and argmax agreement against PyTorch fp32, and how far it is from ONNX
Runtime's int8 outputs in quantization steps.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

from atrous.pipeline.bench.compare import publish
from atrous.pipeline.bench.suite import _cpu_name, _rounds, cpu_builds
from atrous.pipeline.interface import CompileArgs, compile_model, verify_model
from atrous.pipeline.threads import runtime_threads
from atrous.pipeline.verify import Criteria


def bench_model(name: str, presets: dict, repeat: int, build_root: Path) -> dict:
    from atrous.pipeline import source
    from atrous.pipeline.reference import onnxruntime_session
    from atrous.pipeline.runner import CompiledModel

    src = source.from_zoo(name, "standard")
    native = next(iter(presets.values()))
    threads = native.target_dict().get("num-cores")
    builds = {}
    for label, preset in presets.items():
        builds[f"fp32 {label}"] = compile_model(CompileArgs(src, preset, build_root / label, tuned=False))
        builds[f"int8 {label}"] = compile_model(CompileArgs(src, preset, build_root / label, tuned=False,
                                                            precision="int8"))
    int8 = builds["int8 native"]
    # accuracy is reported, not required: a random-weight zoo model on random inputs quantizes worse than a
    # trained one on images, and ONNX Runtime's int8 on the same graph is the yardstick beside it
    result = verify_model(int8, native, criteria=Criteria("int8", min_sqnr_db=0, min_argmax=0))
    inputs, _ = int8.load_golden()
    fp32_session = onnxruntime_session(int8.onnx, threads)
    int8_session = onnxruntime_session(int8.qdq, threads)
    runners = {f"atrous {column}": CompiledModel(a).runner(inputs) for column, a in builds.items()}
    runners["onnxruntime fp32"] = lambda: fp32_session.run(None, inputs)
    runners["onnxruntime int8"] = lambda: int8_session.run(None, inputs)
    seconds = _rounds(runners, repeat)
    by_reference = {c.reference: c for c in result.checks}
    torch_check, ort_check = by_reference.get("pytorch"), by_reference.get("onnxruntime int8")
    return {"model": name, "ms": {k: 1e3 * statistics.median(v) for k, v in seconds.items()},
            "threads": {"atrous": runtime_threads(), "onnxruntime": int8_session.get_session_options()
                        .intra_op_num_threads},
            "library_mb": {c: a.library.stat().st_size / 1e6 for c, a in builds.items() if c.endswith("native")},
            "sqnr_db": torch_check.sqnr_db if torch_check else None,
            "argmax": torch_check.argmax if torch_check else None,
            "ort_steps": ort_check.steps if ort_check else "-"}


def markdown(rows: list[dict], command: str, repeat: int) -> str:
    columns = list(rows[0]["ms"]) if rows else []
    threads = rows[0]["threads"] if rows else {}
    lines = [f"## int8 vs fp32, {datetime.date.today().isoformat()}: {_cpu_name()}",
             "",
             f"Command: `{command}`. Median of {repeat} interleaved rounds, ms; threads: atrous "
             f"{threads.get('atrous')}, ONNX Runtime {threads.get('onnxruntime')}. Untuned builds. int8: ONNX "
             "Runtime's quantize_static (per-channel int8 weights, uint8 activations, MinMax on 8 seeded random "
             "inputs), the same QDQ graph run by atrous and by ONNX Runtime.",
             "",
             "| model | " + " | ".join(columns) + " | int8/fp32 (atrous native) | vs ORT int8 |",
             "|---|" + "---:|" * (len(columns) + 2)]
    for row in rows:
        ms = row["ms"]
        speedup = ms["atrous fp32 native"] / ms["atrous int8 native"]
        vs_ort = ms["onnxruntime int8"] / ms["atrous int8 native"]
        lines.append(f"| {row['model']} | " + " | ".join(f"{ms[c]:.2f}" for c in columns)
                     + f" | {speedup:.2f}x | {vs_ort:.2f}x |")
    lines += ["", "| model | library fp32 MB | library int8 MB | SQNR vs PyTorch fp32 | argmax agreement | "
                  "vs ONNX Runtime int8 (same graph) |", "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        size = row["library_mb"]
        argmax = f"{100 * row['argmax']:.2f}%" if row["argmax"] is not None else "-"
        sqnr = f"{row['sqnr_db']:.1f} dB" if row["sqnr_db"] is not None else "-"
        lines.append(f"| {row['model']} | {size['fp32 native']:.1f} | {size['int8 native']:.1f} | {sqnr} | "
                     f"{argmax} | {row['ort_steps']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from tqdm import tqdm

    from atrous.models import MODELS

    p = argparse.ArgumentParser(prog="python -m atrous.pipeline.bench.precision", description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models (default: all)")
    p.add_argument("--target", default="host")
    p.add_argument("--mcpus", default=None, metavar="CPU,...",
                   help="other CPUs to build for and time here (default: znver3 on an AVX-512 machine; '' for none)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--build-dir", default="build/bench-int8")
    p.add_argument("--out", default=None, help="add the markdown table at the top of this file (default: print only)")
    args = p.parse_args(argv)
    presets = cpu_builds(args.target, args.mcpus)
    rows = []
    for name in tqdm([n for n in args.models.split(",") if n], unit="model"):
        rows.append(bench_model(name, presets, args.repeat, Path(args.build_dir)))
        tqdm.write(f"{name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in rows[-1]["ms"].items()))
    command = "make bench PRECISION=int8" + (f" MODELS={args.models}" if args.models != ",".join(MODELS) else "")
    publish(markdown(rows, command, args.repeat), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
