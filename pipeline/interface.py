"""The typed API behind the CLI: one function per job, each taking a dataclass.

``compile_model``: source -> artifact directory (export, import, optimize, build, golden data), reused when its
fingerprint is unchanged.  ``verify_model``: run the artifact on its golden inputs and compare with the references.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import algorithms
from . import artifact as art
from .build import build, export
from .errors import AtrousError, VerificationError
from .export import export_onnx
from .flops import kernel_flops
from .ingest import load_onnx, to_relax
from .optimize import OptimizeOptions, apply_schedules, lower
from .reference import onnxruntime_outputs, pytorch_outputs
from .schedules.guard import collect_failures
from .device import parse_device, run_on_device
from .signature import signature_text
from .source import Source
from .verify import OutputCheck, compare_all


@dataclass(frozen=True)
class CompileArgs:
    source: Source
    target: object  # targets.DevicePreset
    build_root: Path | None = None
    force: bool = False
    options: OptimizeOptions = OptimizeOptions()
    tuned: bool = True  # apply the device's tuning database (options.database, else the preset's own) if any


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


def fingerprint(onnx_path: Path, target_json: dict, options: OptimizeOptions) -> str:
    digest = hashlib.sha256(onnx_path.read_bytes())
    digest.update(code_digest().encode())
    digest.update(json.dumps(target_json, sort_keys=True).encode())
    digest.update(json.dumps(options.key(), sort_keys=True).encode())
    digest.update(json.dumps(versions(), sort_keys=True).encode())
    if options.database is not None:
        for record in sorted(Path(options.database).glob("*.json")):
            digest.update(record.read_bytes())
    return digest.hexdigest()[:16]


def write_onnx(source: Source, path: Path) -> Path:
    if source.onnx_path is not None:
        shutil.copyfile(source.onnx_path, path)
        return path
    return export_onnx(source.module(), source.inputs, source.output_names, path)


def reference_outputs(source: Source, onnx_path: Path) -> dict[str, np.ndarray]:
    if source.module_factory is not None:
        return pytorch_outputs(source.module(), source.inputs, source.output_names)
    return onnxruntime_outputs(onnx_path, source.inputs)


def tuning_database(args: CompileArgs) -> Path | None:
    """The tuning database ``compile`` applies: the one given, else the preset's committed one, if it exists."""
    from .tune import check_database, has_database

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
    from .tune import tuned_task_count

    source, preset = args.source, args.target
    final = art.artifact_dir(source.name, preset.name, args.build_root)
    options = replace(args.options, database=tuning_database(args))
    with art.staged(final) as stage:
        onnx_path = write_onnx(source, stage.path / "model.onnx")
        target_json = preset.target_dict()
        key = fingerprint(onnx_path, target_json, options)
        existing = art.Artifact(final)
        if not args.force and existing.exists() and existing.meta().fingerprint == key:
            return existing
        model = load_onnx(onnx_path)
        mod = to_relax(model, {n: v.shape for n, v in source.inputs.items()}, source.name)
        mod = lower(mod, preset.tvm_target(), options)
        winograd = algorithms.summary(mod, options.database if options.winograd == "auto" else None)
        tuned, total = tuned_task_count(mod, preset, options.database)
        with collect_failures() as failures:
            mod = apply_schedules(mod, preset.tvm_target(), options)
        flops = kernel_flops(mod)
        expected = reference_outputs(source, onnx_path)
        inputs = tuple(art.TensorSpec.of(n, v) for n, v in source.inputs.items())
        outputs = tuple(art.TensorSpec.of(n, v) for n, v in expected.items())
        export(build(mod, preset, stage.path / "device"), stage.path / "model.so", preset,
               signature_text(source.name, preset.name, inputs, outputs, device_line(target_json)))
        _write_golden(stage.path, source.inputs, expected)
        meta = art.Meta(model=source.name, target=preset.name, target_json=target_json,
                        inputs=inputs, outputs=outputs,
                        reference=source.reference_kind, fingerprint=key, versions=versions(),
                        database=str(options.database) if options.database else None, tuned_tasks=tuned,
                        total_tasks=total, options=options.key(), winograd=winograd, kernel_flops=flops,
                        rule_failures=tuple(f.line() for f in failures))
        (stage.path / "meta.json").write_text(meta.to_json())
        stage.commit()
    return art.Artifact(final)


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
                 device: str | None = None) -> VerifyResult:
    """Run the artifact on its golden inputs, on ``device`` (a ``--device`` string; None: this machine, or the
    target's emulator), and compare with the stored reference and, for PyTorch-sourced models, with ONNX
    Runtime on the exported graph as a second reference."""
    meta = artifact.meta()
    inputs, expected = artifact.load_golden()
    where = parse_device(device, preset)
    actual = run_on_device(artifact, preset, where, inputs)
    checks = compare_all(actual, expected, preset.tolerance, meta.reference)
    notes = []
    if where.emulated:
        notes.append(f"ran emulated ({preset.emulator[0]}): this proves correctness only; "
                     "emulated timings are not performance numbers")
    elif where.kind != "local":
        notes.append(f"ran on {where.label}")
    if second_reference and meta.reference != "onnxruntime":
        try:
            ort = onnxruntime_outputs(artifact.onnx, inputs)
        except Exception as err:  # ORT has gaps of its own (e.g. dilated convs with auto_pad SAME_*)
            notes.append(f"second reference onnxruntime could not run this graph: {_first_line(err)}")
        else:
            checks += compare_all(actual, dict(zip(expected, ort.values())), preset.tolerance, "onnxruntime")
    return VerifyResult(artifact, checks, preset.tolerance, tuple(notes), where.label)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def require_ok(result: VerifyResult) -> VerifyResult:
    if not result.ok:
        bad = ", ".join(f"{c.name} vs {c.reference}" for c in result.checks if not c.ok)
        raise VerificationError(f"{result.artifact.meta().model} on {result.artifact.meta().target}: "
                                f"outputs differ beyond tolerance ({bad})")
    return result
