"""The zoo's registry: a ``ZooModel`` per network family member, each with named presets.

A preset fixes the constructor arguments and the static input shapes, so that a model and its example inputs are
fully determined by ``(name, preset, seed)``. ``create`` builds the module and initialises it deterministically
(see :mod:`models.weights`); ``example_inputs`` draws seeded inputs with the model's ``make_inputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from atrous.pipeline.errors import UnknownNameError

from atrous.models.weights import initialise


@dataclass(frozen=True)
class ModelPreset:
    """Constructor kwargs and static I/O signature of one configuration of a model."""

    config: dict
    inputs: dict[str, tuple[int, ...]]  # input name -> shape, in forward() argument order (float32)
    outputs: tuple[str, ...]  # output names, in forward() return order


def random_normal_inputs(preset: ModelPreset, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Standard-normal float32 tensors of the preset's shapes (a stand-in for normalised images)."""
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in preset.inputs.items()}


@dataclass(frozen=True)
class ZooModel:
    """A network of the zoo: how to build it, at which presets, and how to make inputs for it."""

    name: str
    summary: str
    factory: Callable[..., torch.nn.Module]
    presets: dict[str, ModelPreset] = field(default_factory=dict)
    make_inputs: Callable[[ModelPreset, np.random.Generator], dict[str, np.ndarray]] = random_normal_inputs

    def preset(self, name: str) -> ModelPreset:
        if name not in self.presets:
            raise UnknownNameError("preset", name, self.presets)
        return self.presets[name]

    def create(self, preset: str = "standard", seed: int = 0) -> torch.nn.Module:
        """Build the model at ``preset``, seeded-initialise it, and return it in eval mode."""
        spec = self.preset(preset)
        torch.manual_seed(seed)
        module = self.factory(**spec.config)
        initialise(module, seed)
        return module.eval()

    def example_inputs(self, preset: str = "standard", seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded example inputs, name -> contiguous float32 array, in forward() order."""
        spec = self.preset(preset)
        arrays = self.make_inputs(spec, np.random.default_rng(seed))
        return {name: np.ascontiguousarray(arrays[name], dtype=np.float32) for name in spec.inputs}


MODELS: dict[str, ZooModel] = {}


def register(model: ZooModel) -> ZooModel:
    """Add ``model`` to :data:`MODELS`; a second model of the same name is refused."""
    if model.name in MODELS:
        raise ValueError(f"a zoo model named '{model.name}' is already registered")
    missing = {"tiny", "standard"} - set(model.presets)
    if missing:
        raise ValueError(f"zoo model '{model.name}' lacks the preset(s) {sorted(missing)}")
    MODELS[model.name] = model
    return model


def get_model(name: str) -> ZooModel:
    if name not in MODELS:
        raise UnknownNameError("model", name, MODELS)
    return MODELS[name]
