"""What gets compiled: a zoo model, a PyTorch module built in code, or an ONNX file.

A ``Source`` knows how to produce its ONNX graph, seeded example inputs, and reference outputs (PyTorch for
modules, ONNX Runtime for ONNX files), so every later stage is the same whatever the model came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import AtrousError, InputMismatchError

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
    from models import get_model

    zoo = get_model(name)
    spec = zoo.preset(preset)  # validates the preset name
    label = name if preset == "standard" else f"{name}.{preset}"
    return from_torch(label, lambda: zoo.create(preset, seed=seed), zoo.example_inputs(preset, seed=seed),
                      spec.outputs, description=zoo.summary)


def from_onnx_file(path: str | Path, shapes: Shapes | None = None, seed: int = 0) -> Source:
    """An ONNX file. Dynamic input dimensions must be fixed with ``shapes`` (name -> shape)."""
    from .ingest import graph_inputs, load_onnx

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
    """A CLI model argument: an existing ``*.onnx`` path, else a zoo model name."""
    if spec.endswith(".onnx") or Path(spec).is_file():
        if not Path(spec).is_file():
            raise AtrousError(f"ONNX file '{spec}' does not exist")
        return from_onnx_file(spec, shapes, seed)
    if shapes:
        raise InputMismatchError("--input-shape applies to ONNX files; zoo models take their shapes from "
                                 "--preset (see 'atrous list models')")
    return from_zoo(spec, preset, seed)


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
