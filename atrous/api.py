"""The Python API: the CLI's jobs as functions, on a module you hold, an ONNX or .pt2 file, or a zoo name.

    import atrous
    compiled = atrous.compile(module, (x,), target="rpi4", tuned=True)
    report = compiled.verify()      # per output: max-abs and rel-L2 vs PyTorch (and ONNX Runtime); raises on mismatch
    y = compiled(x)                 # run here, or under the target's emulator (qemu for ARM presets)
    compiled.bundle("out/")         # the on-device bundle: model.so, runtime, golden data, run.sh

Errors are the typed exceptions of ``atrous.pipeline.errors`` (``AtrousError`` and its kinds), the same ones the
CLI prints as one line. Nothing below the CLI imports this module.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from atrous.pipeline.errors import AtrousError, InputMismatchError

__all__ = ["compile", "tune", "list_models", "list_targets", "Compiled", "Report"]


@dataclass(frozen=True)
class Report:
    """A verification: one check per output and reference (``checks``: name, reference, max_abs, rel_l2, ok)."""

    checks: tuple
    device: str
    notes: tuple[str, ...]
    text: str = field(repr=False)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def __str__(self) -> str:
        return self.text


class Compiled:
    """A model compiled for a target: call it, verify it, bundle it."""

    def __init__(self, artifact, preset, source):
        self.artifact, self.preset, self.source = artifact, preset, source
        self._local = None

    def __repr__(self) -> str:
        return f"<atrous.Compiled {self.source.name} for {self.preset.name} at {self.artifact.root}>"

    @property
    def path(self) -> Path:
        """The build directory: model.so, model.onnx, meta.json, golden data."""
        return self.artifact.root

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.artifact.meta().inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.artifact.meta().outputs)

    def verify(self, device: str | None = None, check: bool = True, criteria=None) -> Report:
        """Run the golden inputs (on ``device``: None for here or the target's emulator, else ssh://, rpc:// or
        tracker:// URLs) and compare with the reference (PyTorch for modules) and ONNX Runtime. Raises
        ``VerificationError`` on a mismatch unless ``check`` is False. Reduced-precision builds are judged by
        ``criteria`` (``atrous.pipeline.verify.Criteria``: SQNR, argmax agreement, steps from ONNX Runtime)."""
        from atrous.pipeline.interface import require_ok, verify_model
        from atrous.pipeline.verify import report

        result = verify_model(self.artifact, self.preset, device=device, criteria=criteria)
        if check:
            require_ok(result)
        return Report(tuple(result.checks), result.device, result.notes,
                      report(result.checks, result.tolerance, result.notes))

    def __call__(self, *inputs, device: str | None = None):
        """Outputs for ``inputs`` (tensors or arrays, in the order of ``input_names``, or one dict by name): one
        output alone, several as a tuple; torch tensors in, torch tensors out."""
        named = _named_inputs(inputs, self.input_names)
        as_torch = any(type(v).__module__.startswith("torch") for v in named.values())
        arrays = {k: _array(v) for k, v in named.items()}
        if device is None and self.preset.runs_here:
            if self._local is None:
                from atrous.pipeline.runner import CompiledModel

                self._local = CompiledModel(self.artifact)
            outputs = self._local.run(arrays)
        else:
            from atrous.pipeline.devices.address import parse_device
            from atrous.pipeline.devices.device import run_on_device

            outputs = run_on_device(self.artifact, self.preset, parse_device(device, self.preset), arrays)
        values = [outputs[n] for n in self.output_names]
        if as_torch:
            import torch

            values = [torch.from_numpy(v) for v in values]
        return values[0] if len(values) == 1 else tuple(values)

    def bundle(self, out: str | Path | None = None) -> Path:
        """The on-device bundle (a directory with run.sh; a .tar.gz beside it); copied to ``out`` if given."""
        from atrous.pipeline.devices.bundle import make_bundle

        from atrous.pipeline.verify import Criteria

        precision = self.artifact.meta().precision
        made = make_bundle(self.artifact, self.preset.tolerance if precision == "fp32" else Criteria(precision))
        if out is None:
            return made
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            raise AtrousError(f"bundle destination {out} is not empty: give a new or empty directory")
        shutil.copytree(made, out, symlinks=True, dirs_exist_ok=True)
        return out


def compile(model: Any, example_inputs: Sequence | dict | None = None, *, target: str = "host",
            tuned: bool = True, mcpu: str | None = None, name: str | None = None, input_names: Sequence[str] = (),
            input_shapes: dict | None = None, preset: str = "standard", seed: int = 0,
            build_dir: str | Path | None = None, force: bool = False, winograd: str = "auto",
            exporter: str = "dynamo", database: str | Path | None = None, precision: str = "fp32",
            calibration: str | Path | int | None = None) -> Compiled:
    """Compile ``model`` for ``target`` (``list_targets()``).

    ``model`` is an ``nn.Module`` (with ``example_inputs``: a tuple of tensors or arrays in forward's order, or a
    dict by name; names from ``input_names``, else ``input``/``input0``...), a ``torch.export`` ExportedProgram, a
    path to an ``.onnx`` or ``.pt2`` file, ``"file.py:make_model"``, or a zoo name (``list_models()``, at
    ``preset``). ``input_shapes`` ({name: shape}) fixes dynamic dimensions of files, or gives the shapes of a
    ``file.py:function`` module. ``tuned`` applies the target's tuning database (or ``database``), when it has
    one. ``precision="int8"`` (CPU targets) quantizes with ONNX Runtime's quantizer, calibrated on ``calibration``
    (a directory of .npy/.npz samples, or a number of seeded random inputs; default 8), and compiles int8
    kernels; ``"fp16"`` (GPU targets) keeps activations and weights in float16 (convs sum in float32), inputs and
    outputs in float32."""
    from atrous import targets
    from atrous.pipeline.interface import CompileArgs, compile_model
    from atrous.pipeline.optimize import OptimizeOptions

    device = targets.get_target(target, mcpu)
    source = _source(model, example_inputs, name, input_names, input_shapes, preset, seed)
    from atrous.pipeline.quantize import Calibration

    options = OptimizeOptions(database=Path(database) if database else None, winograd=winograd)
    artifact = compile_model(CompileArgs(source, device, Path(build_dir) if build_dir else None, force, options,
                                         tuned=tuned, exporter=exporter, precision=precision,
                                         calibration=Calibration.parse(None if calibration is None
                                                                       else str(calibration), seed)))
    return Compiled(artifact, device, source)


def tune(model: Any, example_inputs: Sequence | dict | None = None, *, target: str = "host", trials: int = 64,
         mcpu: str | None = None, name: str | None = None, input_names: Sequence[str] = (),
         input_shapes: dict | None = None, preset: str = "standard", seed: int = 0, device: str | None = None,
         database: str | Path | None = None, progress: bool = True):
    """Tune ``model``'s kernels for ``target`` into its tuning database (``atrous tune``); the report's
    ``table()`` prints default vs best per kernel. ``device``: a tracker:// URL to measure on a board."""
    from atrous import targets
    from atrous.pipeline.optimize import OptimizeOptions
    from atrous.pipeline.tuning.measure import measurement_for
    from atrous.pipeline.tuning.tune import TuneArgs, tune_model

    preset_ = targets.get_target(target, mcpu)
    source = _source(model, example_inputs, name, input_names, input_shapes, preset, seed)
    builder, runner = measurement_for(preset_, device)
    return tune_model(TuneArgs(source, preset_, trials, OptimizeOptions(), database=Path(database) if database
                               else None, runner=runner, builder=builder), progress=progress)


def list_models() -> list[dict]:
    """The zoo: one row per model and preset (model, preset, params_m, gflops, inputs, summary)."""
    from atrous.pipeline.listing import list_models as rows

    return rows(as_json=True)


def list_targets() -> list[dict]:
    """The device presets (target, family, status, arch, summary); ``atrous.targets`` is their package."""
    from atrous.pipeline.listing import list_targets as rows

    return rows(as_json=True)


# ------------------------------------------------------------------------------------------------ the sources
def _source(model, example_inputs, name, input_names, input_shapes, preset, seed):
    from atrous.pipeline import source

    if isinstance(model, (str, Path)):
        if example_inputs is not None:
            raise InputMismatchError(f"{model}: a file or zoo model brings its own inputs; give input_shapes "
                                     "instead of example_inputs")
        return source.resolve(str(model), preset, {k: tuple(v) for k, v in (input_shapes or {}).items()}, seed)
    if type(model).__name__ == "ExportedProgram":
        model = model.module()
    if example_inputs is None:
        raise InputMismatchError("a module needs example_inputs: a tuple of tensors (or arrays) in the order its "
                                 "forward takes them, or a dict by name")
    inputs = {k: _array(v) for k, v in _named_inputs(tuple(example_inputs) if not isinstance(example_inputs, dict)
                                                      else (example_inputs,), tuple(input_names)).items()}
    label = name or type(model).__name__.lower()
    return source.from_module(label, model, inputs)


def _named_inputs(inputs: tuple, names: tuple[str, ...]) -> dict:
    if len(inputs) == 1 and isinstance(inputs[0], dict):
        return dict(inputs[0])
    if names and len(names) != len(inputs):
        raise InputMismatchError(f"{len(inputs)} inputs given for {len(names)} names {list(names)}")
    names = names or (("input",) if len(inputs) == 1 else tuple(f"input{i}" for i in range(len(inputs))))
    return dict(zip(names, inputs))


def _array(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value))
