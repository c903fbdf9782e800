"""``make bench-layers``: the dilated convs of ASPP alone, with and without the dilation-aware rewrites.

Each layer (a 3x3 conv at one rate on one feature map, as DeepLabV3 runs it at 257x257 input) is compiled twice,
untuned: with every rewrite (dead taps dropped, border bands) and with none (the conv as stock TVM lowers it, with
the same default schedules), then timed in interleaved rounds next to PyTorch and ONNX Runtime. Both builds are
verified against PyTorch first. Appends a markdown table to BENCHMARKS.md.

``--tuned N`` (``make bench-layers-tuned``) adds the equal-budget comparison with stock TVM: MetaSchedule gets N
trials per layer for the stock lowering of the conv (one task, no rewrites: "stock MetaSchedule") and the same N
for atrous's rewritten layer (its tasks share the N: a banded conv is several kernels), each into its own fresh
database, and both tuned builds are verified and timed in the same rounds.

``--winograd`` (``make bench-layers-winograd``) times the 3x3 convs of the backbones instead (ResNet-50's dense
and dilated stages, dilated VGG-16's), direct vs Winograd F(2x2, 3x3) and F(4x4, 3x3) (passes/winograd.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from atrous.pipeline.bench.compare import publish
from atrous.pipeline.bench.suite import _cpu_name, _rounds, _torch_run
from atrous.pipeline.interface import CompileArgs, compile_model, require_ok, verify_model
from atrous.pipeline.optimize import OptimizeOptions, rewrites_only

# (input channels, output channels, map size, rate): DeepLabV3 ASPP at output stride 16 (17x17, rates 6/12/18)
# and 8 (33x33, rates doubled), on the MobileNetV2 (320) and ResNet-50 (2048, stride 16 only: seconds per run) heads
LAYERS = ([(320, 256, 17, r) for r in (6, 12, 18)] + [(320, 256, 33, r) for r in (12, 24, 36)]
          + [(2048, 256, 17, r) for r in (6, 12, 18)])
# backbone 3x3 convs at 257x257 input: ResNet-50 layer1-3 (dense) and layer4 (rate 2, output stride 16), dilated
# VGG-16 conv4 (dense) and conv5 (rate 2) as in FCN / InstanceFCN
BACKBONE = [(64, 64, 65, 1), (128, 128, 33, 1), (256, 256, 17, 1), (512, 512, 17, 2), (512, 512, 33, 1),
            (512, 512, 33, 2)]
# every layer rewritten (no channel threshold): these rows are where the threshold comes from
WINOGRAD = {"winograd F(2x2)": OptimizeOptions(winograd="2", winograd_min_channels=1),
            "winograd F(4x4)": OptimizeOptions(winograd="4", winograd_min_channels=1)}


def _tune(src, preset, options, trials: int, directory: Path):
    """``trials`` MetaSchedule trials shared by the layer's tasks, into a fresh database; the options that apply it
    and the number of tasks."""
    import dataclasses
    import math
    import shutil

    from atrous.pipeline.tuning.tune import TuneArgs, lowered_module, tune_model
    from atrous.pipeline.tuning.tasks import extract_tasks

    shutil.rmtree(directory, ignore_errors=True)
    count = len(extract_tasks(lowered_module(src, preset, options), preset))
    tune_model(TuneArgs(src, preset, math.ceil(trials / count), options, database=directory), progress=False)
    return dataclasses.replace(options, database=directory), count


def bench_layer(c_in: int, c_out: int, size: int, rate: int, preset, repeat: int, root: Path,
                trials: int = 0, winograd: bool = False) -> dict:
    import torch

    from atrous.pipeline import source
    from atrous.pipeline.reference import onnxruntime_session
    from atrous.pipeline.runner import CompiledModel

    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((1, c_in, size, size)).astype("float32")}

    def factory():
        torch.manual_seed(0)
        return torch.nn.Conv2d(c_in, c_out, 3, padding=rate, dilation=rate).eval()

    name = f"aspp-{c_in}-{size}-r{rate}"
    stock = rewrites_only()
    others = {k: (v, False) for k, v in WINOGRAD.items()} if winograd else {"no rewrites": (stock, False)}
    builds = {"atrous": (OptimizeOptions(), False)} | others
    if trials:
        builds |= {"atrous tuned": (OptimizeOptions(), True), "stock MetaSchedule": (stock, True)}
    runners, tasks = {}, {}
    for label, (options, tuned) in builds.items():
        src = source.from_torch(name, factory, inputs)
        directory = root / label.replace(" ", "-")
        if tuned:
            options, tasks[label] = _tune(src, preset, options, trials, directory / f"tuning-{name}")
        artifact = compile_model(CompileArgs(src, preset, directory, options=options, tuned=tuned))
        require_ok(verify_model(artifact, preset, second_reference=False))
        runners[label] = CompiledModel(artifact).runner(inputs)
    threads = preset.target_dict().get("num-cores")
    torch.set_num_threads(threads)
    module, args = factory(), [torch.from_numpy(inputs["x"])]
    session = onnxruntime_session(artifact.onnx, threads)
    runners["pytorch"] = lambda: _torch_run(module, args)
    runners["onnxruntime"] = lambda: session.run(None, inputs)
    seconds = _rounds(runners, repeat)
    return {"layer": f"{c_in}->{c_out}, {size}x{size}, rate {rate}", "gflop": 2 * c_in * c_out * 9 * size * size / 1e9,
            "ms": {k: 1e3 * statistics.median(v) for k, v in seconds.items()}, "tasks": tasks}


COLUMNS = ("atrous", "no rewrites", "pytorch", "onnxruntime")
TUNED_COLUMNS = ("atrous tuned", "stock MetaSchedule")


def winograd_markdown(rows: list[dict], command: str, repeat: int) -> str:
    import datetime

    columns = ("atrous", *WINOGRAD, "pytorch", "onnxruntime")
    lines = [f"## Backbone 3x3 convs, direct vs Winograd, untuned, host CPU (`{command}`)", "",
             f"{datetime.date.today().isoformat()}; {_cpu_name()}. Median of {repeat} interleaved rounds, "
             "milliseconds; in brackets, speed relative to ONNX Runtime (>1 is faster). `atrous`: the direct conv "
             "(default options); the Winograd columns add `--winograd` (2 or 4: the output tile); rate > 1 runs "
             "as Winograd over the rate x rate phases of the input.", "",
             "| layer | GFLOP | " + " | ".join(columns) + " | best Winograd vs direct |",
             "|---|---:|" + "---:|" * len(columns) + "---:|"]
    for r in rows:
        ort, ms = r["ms"]["onnxruntime"], r["ms"]
        cells = [f"{ms[c]:.2f} ({ort / ms[c]:.2f}x)" for c in columns]
        best = min(ms[c] for c in WINOGRAD)
        lines.append(f"| {r['layer']} | {r['gflop']:.2f} | " + " | ".join(cells) + f" | {ms['atrous'] / best:.2f}x |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], command: str, repeat: int, trials: int = 0) -> str:
    import datetime

    columns = COLUMNS + (TUNED_COLUMNS if trials else ())
    title = f"tuned with {trials} trials per layer" if trials else "untuned"
    lines = [f"## Dilated ASPP convs alone, {title}, host CPU (`{command}`)", "",
             f"{datetime.date.today().isoformat()}; {_cpu_name()}. Median of {repeat} interleaved rounds, "
             "milliseconds; in brackets, speed relative to ONNX Runtime (>1 is faster). `no rewrites` is the same "
             "compiler with the dilation-aware passes off (TVM's own lowering of the dilated conv)."
             + (f" `stock MetaSchedule`: TVM's lowering tuned with {trials} trials; `atrous tuned`: the rewritten "
                f"layer tuned with the same {trials} trials shared by its kernels (count in brackets)."
                if trials else ""), "",
             "| layer | dense GFLOP | " + " | ".join(columns) + " | rewrites speed-up |"
             + (" tuned: atrous vs stock |" if trials else ""),
             "|---|---:|" + "---:|" * len(columns) + "---:|" + ("---:|" if trials else "")]
    for r in rows:
        ort = r["ms"]["onnxruntime"]
        cells = [f"{r['ms'][c]:.2f} ({ort / r['ms'][c]:.2f}x)" for c in columns]
        if trials:
            cells[-2] += f" [{r['tasks']['atrous tuned']} kernels]"
        line = (f"| {r['layer']} | {r['gflop']:.2f} | " + " | ".join(cells)
                + f" | {r['ms']['no rewrites'] / r['ms']['atrous']:.2f}x |")
        if trials:
            line += f" {r['ms']['stock MetaSchedule'] / r['ms']['atrous tuned']:.2f}x |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from atrous import targets
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="python -m atrous.pipeline.bench.layers", description=__doc__.splitlines()[0])
    p.add_argument("--target", default="host")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--build-dir", default="build/bench-layers")
    p.add_argument("--out", default=None, help="add the markdown table at the top of this file (default: print only)")
    p.add_argument("--tuned", type=int, default=0, metavar="TRIALS",
                   help="also tune each layer with TRIALS MetaSchedule trials, atrous vs stock TVM (equal budget)")
    p.add_argument("--winograd", action="store_true",
                   help="the backbone 3x3 convs instead, direct vs Winograd F(2x2) and F(4x4)")
    p.add_argument("--layers", default=None, metavar="I,J,...",
                   help=f"only these rows of the layer table (ASPP 0-{len(LAYERS) - 1}, backbone "
                        f"0-{len(BACKBONE) - 1}; default: all)")
    args = p.parse_args(argv)
    if args.winograd and args.tuned:
        p.error("--winograd and --tuned are separate tables: run them one at a time")
    preset = targets.get_target(args.target)
    table = BACKBONE if args.winograd else LAYERS
    layers = [table[int(i)] for i in args.layers.split(",")] if args.layers else table
    rows = []
    for layer in tqdm(layers, unit="layer"):
        rows.append(bench_layer(*layer, preset, args.repeat, Path(args.build_dir), args.tuned, args.winograd))
        tqdm.write(f"{rows[-1]['layer']}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in rows[-1]["ms"].items()))
    command = "make bench-layers" + (f"-tuned TRIALS={args.tuned}" if args.tuned else "")
    command += "-winograd" if args.winograd else ""
    if args.layers:
        command += f" LAYERS={args.layers}"
    if args.winograd:
        text = winograd_markdown(rows, command, args.repeat)
    else:
        text = markdown(rows, command, args.repeat, args.tuned)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
