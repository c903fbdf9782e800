"""What gets compiled: a zoo model, a PyTorch module built in code, or an ONNX file.

A ``Source`` knows how to produce its ONNX graph, seeded example inputs, and reference outputs (PyTorch for
modules, ONNX Runtime for ONNX files), so every later stage is the same whatever the model came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from atrous.pipeline.errors import AtrousError, InputMismatchError, first_line

Shapes = dict[str, tuple[int, ...]]


@dataclass
class Source:
    """A model to compile. Exactly one of ``module_factory`` / ``onnx_path`` is set."""

    name: str
    inputs: dict[str, np.ndarray]
    output_names: tuple[str, ...] = ()
    module_factory: Callable[[], object] | None = None
    onnx_path: Path | None = None
    description: str = ""
    _module: object = field(default=None, repr=False)

    @property
    def reference_kind(self) -> str:
        return "pytorch" if self.module_factory else "onnxruntime"

    def module(self):
        """The eager PyTorch module (built once)."""
        if self._module is None:
            self._module = self.module_factory()
        return self._module


def from_torch(name: str, factory: Callable[[], object], inputs: dict[str, np.ndarray],
               output_names=("output",), description: str = "") -> Source:
    """A PyTorch module built by ``factory`` (called lazily) with named example inputs."""
    return Source(name=name, inputs=inputs, output_names=tuple(output_names), module_factory=factory,
                  description=description)


def from_zoo(name: str, preset: str = "standard", seed: int = 0) -> Source:
    """A model of the zoo (``atrous list models``) at one of its presets."""
    from atrous.models import get_model

    zoo = get_model(name)
    spec = zoo.preset(preset)  # validates the preset name
    label = name if preset == "standard" else f"{name}.{preset}"
    return from_torch(label, lambda: zoo.create(preset, seed=seed), zoo.example_inputs(preset, seed=seed),
                      spec.outputs, description=zoo.summary)


def from_onnx_file(path: str | Path, shapes: Shapes | None = None, seed: int = 0) -> Source:
    """An ONNX file. Dynamic input dimensions must be fixed with ``shapes`` (name -> shape)."""
    from atrous.pipeline.ingest import graph_inputs, load_onnx

    path = Path(path)
    model = load_onnx(path)
    specs = graph_inputs(model, shapes or {})
    rng = np.random.default_rng(seed)
    inputs = {n: _random_input(rng, shape, dtype) for n, (shape, dtype) in specs.items()}
    outputs = tuple(o.name for o in model.graph.output)
    return Source(name=path.stem, inputs=inputs, output_names=outputs, onnx_path=path,
                  description=f"ONNX file {path}")


def _random_input(rng, shape, dtype: str) -> np.ndarray:
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise AtrousError(f"cannot make example data for an input of dtype {dtype}")


def resolve(spec: str, preset: str = "standard", shapes: Shapes | None = None, seed: int = 0) -> Source:
    """A CLI model argument: an ``*.onnx`` file, a ``*.pt2`` ExportedProgram, a ``file.py:function`` that returns
    an ``nn.Module`` (or an ``nn.Module`` class), else a zoo model name."""
    path, _, attr = spec.rpartition(":") if _is_user_module(spec) else (spec, "", "")
    if attr:
        return from_python_file(path, attr, shapes, seed)
    if spec.endswith(".pt2"):
        return from_exported_program(spec, shapes, seed)
    if spec.endswith(".onnx") or Path(spec).is_file():
        if not Path(spec).is_file():
            raise AtrousError(f"ONNX file '{spec}' does not exist")
        return from_onnx_file(spec, shapes, seed)
    if shapes:
        raise InputMismatchError("--input-shape applies to ONNX files, .pt2 programs and Python modules; zoo models "
                                 "take their shapes from --preset (see 'atrous list models')")
    return from_zoo(spec, preset, seed)


def _is_user_module(spec: str) -> bool:
    path, sep, attr = spec.rpartition(":")
    return bool(sep) and path.endswith(".py") and attr.isidentifier()


def from_module(name: str, module, inputs: dict[str, np.ndarray], description: str = "") -> Source:
    """An ``nn.Module`` the caller holds, with named example inputs (its forward's positional arguments, in
    order); its outputs are named by running it once (a tensor: ``output``; a tuple: ``output0``...; a dict: its
    keys)."""
    import torch

    if not isinstance(module, torch.nn.Module) and not callable(module):
        raise AtrousError(f"{name}: expected a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, torch.nn.Module):
        try:
            module.eval()
        except NotImplementedError:  # a torch.export program's module has no train/eval modes to switch
            pass
    try:
        with torch.no_grad():
            result = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()))
    except Exception as err:  # most often input shapes the module does not take
        shapes = ", ".join(f"{k}: {'x'.join(map(str, v.shape))}" for k, v in inputs.items())
        raise InputMismatchError(f"{name}: running it on example inputs ({shapes}) failed: {type(err).__name__}: "
                                 f"{first_line(err)}; check the input shapes") from err
    return Source(name=name, inputs=inputs, output_names=_output_names(name, result), module_factory=lambda: module,
                  description=description or f"PyTorch module {name}")


def _output_names(name: str, result) -> tuple[str, ...]:
    import torch

    if isinstance(result, torch.Tensor):
        return ("output",)
    if isinstance(result, (tuple, list)) and all(isinstance(r, torch.Tensor) for r in result):
        return tuple(f"output{i}" for i in range(len(result)))
    if isinstance(result, dict) and all(isinstance(r, torch.Tensor) for r in result.values()):
        return tuple(str(k) for k in result)
    raise AtrousError(f"{name}: the module returned {type(result).__name__}; atrous compiles modules that return "
                      "a tensor, a tuple or list of tensors, or a dict of tensors")


def example_inputs(shapes: Shapes, seed: int = 0, default_name: str = "input") -> dict[str, np.ndarray]:
    """Seeded float32 example inputs of ``shapes`` (an unnamed shape, key "", is called ``default_name``)."""
    rng = np.random.default_rng(seed)
    return {name or default_name: _random_input(rng, shape, "float32") for name, shape in shapes.items()}


def from_python_file(path: str | Path, attr: str, shapes: Shapes | None, seed: int = 0) -> Source:
    """``file.py:make_model``: a function in the user's file that returns an ``nn.Module``, or an ``nn.Module``
    class (built with no arguments), compiled at the input shapes given (``--input-shape x:1x3x512x512``)."""
    import importlib.util

    import torch

    path = Path(path)
    label = f"{path.name}:{attr}"
    if not path.is_file():
        raise AtrousError(f"Python file '{path}' does not exist")
    if not shapes:
        raise InputMismatchError(f"{label} is a PyTorch module: give its input shapes, e.g. --input-shape "
                                 "x:1x3x512x512 (several inputs: x:...,y:..., in the order forward takes them)")
    spec = importlib.util.spec_from_file_location(f"atrous_user_{path.stem}", path)
    code = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(code)
    except Exception as err:
        raise AtrousError(f"{path}: importing it failed: {type(err).__name__}: {err}") from err
    factory = getattr(code, attr, None)
    if factory is None:
        raise AtrousError(f"{path} has no '{attr}' (a function returning an nn.Module, or an nn.Module class)")
    if not callable(factory):
        raise AtrousError(f"{label} is a {type(factory).__name__}, not a function or an nn.Module class")
    try:
        module = factory()
    except Exception as err:
        raise AtrousError(f"{label}() failed: {type(err).__name__}: {first_line(err)}") from err
    if not isinstance(module, torch.nn.Module):
        raise AtrousError(f"{label}() returned {type(module).__name__}, not a torch.nn.Module")
    return from_module(f"{path.stem}-{attr}", module, example_inputs(shapes, seed),
                       description=f"PyTorch module {label}")


def from_exported_program(path: str | Path, shapes: Shapes | None = None, seed: int = 0) -> Source:
    """A ``torch.export.save``d ExportedProgram: its input names and shapes are the program's (``shapes`` fixes
    dynamic dimensions, or replaces them)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise AtrousError(f"ExportedProgram file '{path}' does not exist")
    try:
        program = torch.export.load(str(path))
    except Exception as err:
        raise AtrousError(f"{path} is not a torch.export program ({type(err).__name__}: {err}); save one with "
                          "torch.export.save(torch.export.export(model, args), 'model.pt2')") from err
    wanted, found = dict(shapes or {}), {}
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in program.graph_signature.user_inputs:
            continue
        value = node.meta.get("val")
        shape = wanted.pop(node.name, None) or wanted.pop("", None)
        if shape is None:
            shape = tuple(value.shape) if value is not None else ()
            if not all(isinstance(d, int) for d in shape):
                raise InputMismatchError(f"{path}: input '{node.name}' has dynamic dimensions {tuple(shape)}; fix "
                                         f"them with --input-shape {node.name}:1x3x512x512")
        if value is not None and value.dtype != torch.float32:
            raise AtrousError(f"{path}: input '{node.name}' is {value.dtype}; atrous compiles float32 inputs")
        found[node.name] = tuple(int(d) for d in shape)
    if wanted:
        raise InputMismatchError(f"{path}: --input-shape names {sorted(wanted)}, not inputs of the program "
                                 f"({sorted(found)})")
    return from_module(path.stem, program.module(), example_inputs(found, seed),
                       description=f"torch.export program {path}")


def parse_shapes(text: str) -> Shapes:
    """``"x:1x3x224x224,y:1x10"`` (or ``"1x3x224x224"`` for a single unnamed input, key ``""``)."""
    shapes = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise AtrousError(f"bad shape '{item}': write NAME:1x3x224x224") from None
        if any(d <= 0 for d in shape):
            raise AtrousError(f"bad shape '{item}': dimensions must be positive")
        shapes[name] = shape
    return shapes
