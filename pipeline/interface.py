"""The typed API behind the CLI: one function per job, each taking a dataclass.

``compile_model``: source -> artifact directory (export, import, optimize, build, golden data), reused when its
fingerprint is unchanged.  ``verify_model``: run the artifact on its golden inputs and compare with the references.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from atrous.pipeline.tuning import algorithm_table
from atrous.pipeline import artifact as art
from atrous.pipeline.build import build, export
from atrous.pipeline.errors import AtrousError, CompilerBugError, VerificationError, first_line
from atrous.pipeline.export import write_onnx
from atrous.pipeline.flops import kernel_flops
from atrous.pipeline.ingest import load_onnx, to_relax
from atrous.pipeline.passes.half_precision import fp16_problem
from atrous.pipeline.optimize import OptimizeOptions, apply_schedules, lower
from atrous.pipeline.reference import onnxruntime_outputs, pytorch_outputs
from atrous.pipeline.schedules.guard import collect_failures
from atrous.pipeline.devices.address import parse_device
from atrous.pipeline.devices.device import run_on_device
from atrous.pipeline.signature import signature_text
from atrous.pipeline.quantize import PRECISIONS, Calibration, is_qdq, output_steps, quantize
from atrous.pipeline.source import Source
from atrous.pipeline.verify import Criteria, OutputCheck, compare_all, compare_reduced, compare_steps


@dataclass(frozen=True)
class CompileArgs:
    source: Source
    target: object  # targets.DevicePreset
    build_root: Path | None = None
    force: bool = False
    options: OptimizeOptions = OptimizeOptions()
    tuned: bool = True  # apply the device's tuning database (options.database, else the preset's own) if any
    exporter: str = "dynamo"  # PyTorch sources: torch.onnx's dynamo exporter, else "torchscript" (export.py)
    precision: str = "fp32"  # "int8": quantized by ONNX Runtime's quantizer (quantize.py); "fp16": GPU presets
    # only, convs in float16 (passes/half_precision.py)
    calibration: Calibration = Calibration()  # int8: the activations' calibration samples


def versions() -> dict:
    import onnx
    import tvm

    return {"tvm": tvm.__version__, "onnx": onnx.__version__, "atrous": _atrous_version()}


def _atrous_version() -> str:
    try:
        from importlib.metadata import version

        return version("atrous")
    except Exception:  # running from a source tree that is not installed
        return "source"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of the compiler's own source (pipeline/ and targets/): an artifact built by other code is stale
    even when the model and the options are the same."""
    digest = hashlib.sha256()
    for package in (Path(__file__).parent, Path(__file__).parent.parent / "targets"):
        for path in sorted(package.rglob("*.py")) + sorted(package.rglob("*.c")):
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(onnx_path: Path, target_json: dict, options: OptimizeOptions, exporter: str = "",
                inputs: dict | None = None, precision: dict | None = None) -> str:
    """What an artifact was built from: the graph, the input shapes it was imported at (a graph with dynamic
    dimensions compiles to a different model for each), the compiler, the target, the options, the database,
    the precision (and an int8 build's calibration samples)."""
    digest = hashlib.sha256(onnx_path.read_bytes())
    digest.update(json.dumps(precision or {}, sort_keys=True).encode())
    for name, value in (inputs or {}).items():
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
    digest.update(code_digest().encode())
    digest.update(exporter.encode())
    digest.update(json.dumps(target_json, sort_keys=True).encode())
    digest.update(json.dumps(options.key(), sort_keys=True).encode())
    digest.update(json.dumps(versions(), sort_keys=True).encode())
    if options.database is not None:
        for record in sorted(Path(options.database).glob("*.json")):
            digest.update(record.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def stage(what: str):
    """Any exception of a compiler stage that is not already an AtrousError is a CompilerBugError naming the
    stage: one line for the user, the traceback chained for a bug report."""
    try:
        yield
    except AtrousError:
        raise
    except Exception as err:
        raise CompilerBugError(what, err) from err


@dataclass(frozen=True)
class Reference:
    outputs: dict | None  # None: no reference could run the model
    kind: str  # "pytorch", "onnxruntime", "onnxruntime (opset A -> B)" or "none"
    note: str = ""  # why there is none, or what was done to get one


REFERENCE_OPSET = 13  # what a graph ONNX Runtime refuses is converted to (onnx.version_converter)


def reference_outputs(source: Source, onnx_path: Path) -> Reference:
    """The outputs to compare with: the PyTorch module's, else ONNX Runtime's on the graph, else (an opset older
    than ONNX Runtime runs) on the graph converted to a recent opset by ONNX's version converter, else none,
    with the reason: compiling does not need a reference, only verifying does."""
    if source.module_factory is not None:
        return Reference(pytorch_outputs(source.module(), source.inputs, source.output_names), "pytorch")
    try:
        return Reference(onnxruntime_outputs(onnx_path, source.inputs), "onnxruntime")
    except Exception as err:  # noqa: BLE001 - ONNX Runtime's own refusal, kept as the reason
        refused = first_line(err)
    model = onnx.load(str(onnx_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    try:
        from onnx import version_converter

        converted = onnx_path.with_name("reference.onnx")
        onnx.save(version_converter.convert_version(model, REFERENCE_OPSET), str(converted))
        outputs = onnxruntime_outputs(converted, source.inputs)
        converted.unlink()
        return Reference(outputs, f"onnxruntime (opset {opset} -> {REFERENCE_OPSET})",
                         f"ONNX Runtime refused the graph ({refused}); it ran the graph converted to opset "
                         f"{REFERENCE_OPSET} by onnx.version_converter")
    except Exception as err:  # noqa: BLE001
        onnx_path.with_name("reference.onnx").unlink(missing_ok=True)
        return Reference(None, "none", f"ONNX Runtime refused the graph ({refused}) and converting it to opset "
                                       f"{REFERENCE_OPSET} failed ({first_line(err)})")


def _output_specs(mod, names) -> tuple:
    """The compiled model's outputs (name, shape, dtype) from its Relax signature, when no reference gave them."""
    ret = mod["main"].ty.ret if hasattr(mod["main"].ty, "ret") else mod["main"].ret_type
    fields = ret.fields if hasattr(ret, "fields") else [ret]
    return tuple(art.TensorSpec(n, tuple(int(d) for d in t.shape.values), str(t.dtype)) for n, t in zip(names, fields))


def tuning_database(args: CompileArgs) -> Path | None:
    """The tuning database ``compile`` applies: the one given, else the preset's committed one, if it exists."""
    from atrous.pipeline.tuning.database import check_database, has_database

    if not args.tuned:
        return None
    directory = Path(args.options.database) if args.options.database else args.target.tuning_dir
    if not has_database(directory):
        if args.options.database:
            raise AtrousError(f"no tuning database in {directory}; run 'atrous tune' first or drop --database")
        return None
    check_database(directory, args.target)
    return directory


def compile_model(args: CompileArgs) -> art.Artifact:
    """Compile ``args.source`` for ``args.target`` into ``build/<model>/<target>/`` and return the artifact."""
    from atrous.pipeline.tuning.database import tuned_task_count

    source, preset = args.source, args.target
    check_precision(args.precision, preset)
    final = art.artifact_dir(source.name, preset.name, args.build_root, args.precision)
    options = replace(args.options, database=tuning_database(args), precision=args.precision)
    with art.staged(final) as staging:
        exported = write_onnx(source, staging.path / "model.onnx", args.exporter)
        onnx_path = exported.path
        target_json = preset.target_dict()
        reduce_range = args.precision == "int8" and seven_bit_weights(options, preset)
        key = fingerprint(onnx_path, target_json, options, exported.exporter, source.inputs,
                          {"precision": args.precision, "reduce_range": reduce_range,
                           **(args.calibration.key() if args.precision == "int8" else {})})
        existing = art.Artifact(final)
        if not args.force and existing.exists() and existing.meta().fingerprint == key:
            return existing
        model = load_onnx(onnx_path)
        precision, calibration = args.precision, ""
        if is_qdq(model):  # already quantized (ONNX Runtime's quantizer, PT2E): compiled as the int8 graph it is
            if args.precision == "fp16":
                raise AtrousError(f"{source.name}: the graph is already quantized (QuantizeLinear/DequantizeLinear "
                                  "nodes): it compiles as the int8 graph it is; drop --precision fp16, or give "
                                  "the float model")
            precision = "int8"
        elif args.precision == "int8":
            with stage("quantizing the graph (ONNX Runtime's quantize_static)"):
                model = load_onnx(quantize(onnx_path, staging.path / "model.int8.onnx", args.calibration,
                                           source.inputs, reduce_range))
            calibration = args.calibration.describe()
        steps = output_steps(model) if precision == "int8" else {}
        with stage("importing the graph"):
            mod = to_relax(model, {n: v.shape for n, v in source.inputs.items()}, source.name)
        with stage("optimizing the graph"):
            mod = lower(mod, preset.tvm_target(), options)
            winograd = algorithm_table.summary(mod, options.database if options.winograd == "auto" else None)
            tuned, total = tuned_task_count(mod, preset, options.database)
        lowered = mod
        with collect_failures() as failures, stage("scheduling the kernels"):
            mod = apply_schedules(mod, preset.tvm_target(), options)
        flops = kernel_flops(mod, lowered)
        reference = reference_outputs(source, onnx_path)
        expected = reference.outputs or {}
        inputs = tuple(art.TensorSpec.of(n, v) for n, v in source.inputs.items())
        outputs = (tuple(art.TensorSpec.of(n, v) for n, v in expected.items()) if reference.outputs is not None
                   else _output_specs(mod, source.output_names))
        with stage("building the library"):
            export(build(mod, preset, staging.path / "device"), staging.path / "model.so", preset,
                   signature_text(source.name, preset.name, inputs, outputs, device_line(target_json)))
        _write_golden(staging.path, source.inputs, expected)
        meta = art.Meta(model=source.name, target=preset.name, target_json=target_json,
                        inputs=inputs, outputs=outputs,
                        reference=reference.kind, reference_note=reference.note, fingerprint=key,
                        versions=versions(),
                        database=str(options.database) if options.database else None, tuned_tasks=tuned,
                        total_tasks=total, options=options.key(), winograd=winograd, kernel_flops=flops,
                        rule_failures=tuple(f.line() for f in failures), exporter=exported.exporter,
                        exporter_fallback=exported.fallback, precision=precision, calibration=calibration,
                        int8_kernels=int8_kernels(options, preset) if precision == "int8" else "",
                        output_steps=steps)
        (staging.path / "meta.json").write_text(meta.to_json())
        staging.commit()
    return art.Artifact(final)


def seven_bit_weights(options: OptimizeOptions, preset) -> bool:
    """Whether an int8 build for ``preset`` quantizes its weights to 7 bits: x86 CPUs without VNNI, whose fast
    int8 step (vpmaddubsw) is exact only for them (schedules/int8_tiles.py)."""
    from atrous.pipeline.passes.integer_convs import wanted
    from atrous.pipeline.schedules.int8_tiles import dot_of

    target = preset.tvm_target()
    return target.kind.name == "llvm" and wanted(options.integer_convs, target) and dot_of(target).name == "pmaddwd"


def int8_kernels(options: OptimizeOptions, preset) -> str:
    """What an int8 build's convs run on, for the report (schedules/int8_tiles.py)."""
    from atrous.pipeline.passes.integer_convs import wanted
    from atrous.pipeline.schedules.int8_tiles import dot_of

    target = preset.tvm_target()
    if not wanted(options.integer_convs, target):
        return ("the QDQ graph's float arithmetic in the fp32 kernels (no int8 dot product of ours on this CPU, "
                "or integer_convs off)")
    return {"vnni": "int8 kernels, vpdpbusd (AVX-512 VNNI)",
            "pmaddwd": "int8 kernels, vpmaddubsw on 7-bit weights (no VNNI; vpmaddwd on int16 pairs for convs "
                       "with full-range weights)",
            "sdot": "int8 kernels, sdot (AArch64 dot product)",
            "loop": "int8 kernels, a plain vectorised loop (no dot product: slower than fp32)"}[dot_of(target).name]


def check_precision(precision: str, preset) -> None:
    """Refuse a precision the target has no kernels for, naming what it has."""
    if precision not in PRECISIONS:
        raise AtrousError(f"--precision {precision}: not one of {', '.join(PRECISIONS)}")
    kind = preset.tvm_target().kind.name
    if precision == "int8" and kind != "llvm":
        raise AtrousError(f"--precision int8 has kernels for CPU presets only; '{preset.name}' is a {kind} target: "
                          "compile it in fp32 (drop --precision)")
    if precision == "fp16" and (problem := fp16_problem(preset)):
        raise AtrousError(f"--precision fp16: {problem}")


def device_line(target_json: dict) -> str:
    """The signature's device field: "" for CPU targets, "cuda sm_XX" for CUDA, "vulkan" for Vulkan."""
    kind = target_json.get("kind")
    if kind == "cuda":
        return f"cuda {target_json['arch']}"
    return "vulkan" if kind == "vulkan" else ""


def _write_golden(root: Path, inputs: dict, expected: dict) -> None:
    (root / "golden").mkdir()
    np.savez(root / "golden" / "inputs.npz", **inputs)
    np.savez(root / "golden" / "expected.npz", **expected)


@dataclass(frozen=True)
class VerifyResult:
    artifact: art.Artifact
    checks: list[OutputCheck]
    tolerance: object
    notes: tuple[str, ...] = ()
    device: str = "local"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def verify_model(artifact: art.Artifact, preset, second_reference: bool = True,
                 device: str | None = None, criteria: Criteria | None = None) -> VerifyResult:
    """Run the artifact on its golden inputs, on ``device`` (a ``--device`` string; None: this machine, or the
    target's emulator), and compare with the stored reference and, for PyTorch-sourced models, with ONNX
    Runtime on the exported graph as a second reference. Reduced-precision builds are judged by ``criteria``
    (default: Criteria's defaults): against the fp32 original by SQNR and argmax agreement (int8) or rel-L2
    (fp16), and an int8 build against ONNX Runtime on the same QDQ graph in quantization steps."""
    meta = artifact.meta()
    if meta.reference == "none":
        raise VerificationError(f"{meta.model}: nothing to compare with: {meta.reference_note}. The compiled "
                                "model runs (atrous run / bundle/run.sh); check its outputs another way")
    inputs, expected = artifact.load_golden()
    where = parse_device(device, preset)
    actual = run_on_device(artifact, preset, where, inputs)
    tolerance = preset.tolerance if meta.precision == "fp32" else (criteria or Criteria(meta.precision))
    notes = []
    if meta.precision == "fp32":
        checks = compare_all(actual, expected, tolerance, meta.reference)
    elif meta.precision == "int8" and not artifact.qdq.exists():  # a QDQ file: its reference ran the same graph
        checks = _against_qdq(actual, expected, meta, tolerance, meta.reference)
    else:
        checks = _against_fp32(actual, expected, tolerance, meta.reference)
    if meta.calibration:
        notes.append(f"int8 calibration: {meta.calibration}")
    if where.emulated:
        notes.append(f"ran emulated ({preset.emulator[0]}): this proves correctness only; "
                     "emulated timings are not performance numbers")
    elif where.kind != "local":
        notes.append(f"ran on {where.label}")
    if meta.reference_note:
        notes.append(f"reference: {meta.reference_note}")
    quantized_here = meta.precision == "int8" and artifact.qdq.exists()
    if second_reference and (quantized_here or not meta.reference.startswith("onnxruntime")):
        graph = artifact.qdq if quantized_here else artifact.onnx
        try:
            ort = dict(zip(expected, onnxruntime_outputs(graph, inputs).values()))
        except Exception as err:  # ORT has gaps of its own (e.g. dilated convs with auto_pad SAME_*)
            notes.append(f"second reference onnxruntime could not run this graph: {first_line(err)}")
        else:
            if meta.precision == "fp32":
                checks += compare_all(actual, ort, tolerance, "onnxruntime")
            elif meta.precision == "int8":
                checks += _against_qdq(actual, ort, meta, tolerance, "onnxruntime int8")
            else:
                checks += _against_fp32(actual, ort, tolerance, "onnxruntime")
    return VerifyResult(artifact, checks, tolerance, tuple(notes), where.label)


def _against_fp32(actual: dict, expected: dict, criteria: Criteria, reference: str) -> list[OutputCheck]:
    missing = [OutputCheck(n, reference, np.inf, np.inf, False, "output missing") for n in expected if n not in actual]
    return missing + [compare_reduced(n, actual[n], expected[n], criteria, reference) for n in expected if n in actual]


def _against_qdq(actual: dict, expected: dict, meta, criteria: Criteria, reference: str) -> list[OutputCheck]:
    """Outputs that are dequantized int8 values in quantization steps; others (float ops after the graph's last
    dequantize) as reduced precision."""
    checks = []
    for name in expected:
        if name not in actual:
            checks.append(OutputCheck(name, reference, np.inf, np.inf, False, "output missing"))
        elif name in meta.output_steps:
            checks.append(compare_steps(name, actual[name], expected[name], meta.output_steps[name], criteria,
                                        reference))
        else:
            checks.append(compare_reduced(name, actual[name], expected[name], criteria, reference))
    return checks


def require_ok(result: VerifyResult) -> VerifyResult:
    if not result.ok:
        bad = ", ".join(f"{c.name} vs {c.reference}" for c in result.checks if not c.ok)
        raise VerificationError(f"{result.artifact.meta().model} on {result.artifact.meta().target}: "
                                f"outputs differ beyond tolerance ({bad})")
    return result
