"""Stage: run a compiled artifact on this machine through the Relax VM, checking inputs against its metadata."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from atrous.pipeline.artifact import Artifact, Meta
from atrous.pipeline.errors import InputMismatchError


def check_inputs(meta: Meta, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Inputs in the compiled order, after checking names, shapes and dtypes; raises InputMismatchError."""
    expected = {s.name: s for s in meta.inputs}
    if set(inputs) != set(expected):
        raise InputMismatchError(f"{meta.model} takes inputs {sorted(expected)}, got {sorted(inputs)}")
    ordered = []
    for spec in meta.inputs:
        value = np.asarray(inputs[spec.name])
        if tuple(value.shape) != tuple(spec.shape) or str(value.dtype) != spec.dtype:
            raise InputMismatchError(
                f"input '{spec.name}' of {meta.model} was compiled for {spec.dtype}{list(spec.shape)}, "
                f"got {value.dtype}{list(value.shape)}; recompile with the new shape (zoo: --preset, "
                "ONNX: --input-shape) or pass data of the compiled shape")
        ordered.append(np.ascontiguousarray(value))
    return ordered


# library path -> fingerprint of the artifact first loaded from it in this process. The dynamic loader keeps a
# library by its path: loading a recompiled model.so from the same path (the same model name and target, new
# shapes or weights) would return the library already loaded, so a new build is loaded through a name of its own.
_LOADED: dict[str, str] = {}


def loadable_library(artifact: Artifact) -> Path:
    """The path to load ``artifact``'s library from in this process (see ``_LOADED``)."""
    path, key = str(artifact.library), artifact.meta().fingerprint
    if _LOADED.setdefault(path, key) == key:
        return artifact.library
    alias = artifact.root / f".model-{key}.so"
    if not alias.exists():
        try:
            os.link(artifact.library, alias)
        except OSError:
            shutil.copy2(artifact.library, alias)
    return alias


class CompiledModel:
    """A loaded artifact: ``run(inputs) -> {output name: array}`` and ``time(inputs)``."""

    def __init__(self, artifact: Artifact):
        import tvm
        from tvm import relax

        self.artifact = artifact
        self.meta = artifact.meta()
        self.device = tvm.cpu(0)
        devices = [self.device]
        if self.meta.target_json.get("kind") == "vulkan":  # lavapipe or a desktop GPU through our backend
            from atrous.pipeline.devices.vulkan.backend import load_runtime

            load_runtime()
            self.device = tvm.vulkan(0)
            devices = [self.device, tvm.cpu(0)]  # the VM runs shape computations on the host
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(loadable_library(artifact))), devices)

    @property
    def threads(self) -> int:
        """Threads TVM's runtime uses for this model when run from the calling thread (read back, not assumed)."""
        if self.device.dlpack_device_type() != 1:  # a GPU: the host side runs on one thread
            return 1
        from atrous.pipeline.threads import runtime_threads

        return runtime_threads()

    @property
    def vm(self):
        """The Relax virtual machine (bench/profile.py instruments it)."""
        return self._vm

    def _args(self, inputs):
        import tvm

        return [tvm.runtime.tensor(a, self.device) for a in check_inputs(self.meta, inputs)]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._vm["main"](*self._args(inputs))
        values = [result] if hasattr(result, "numpy") else list(result)
        names = [s.name for s in self.meta.outputs]
        return {n: v.numpy() for n, v in zip(names, values)}

    def runner(self, inputs: dict[str, np.ndarray]):
        """A no-argument callable that runs the model once on ``inputs`` (copied to the device once)."""
        args = self._args(inputs)
        return lambda: self._vm["main"](*args)

    def time(self, inputs: dict[str, np.ndarray], number: int = 1, repeat: int = 5) -> list[float]:
        """Per-run seconds for ``repeat`` measurements of ``number`` runs each (after one warm-up)."""
        timer = self._vm.time_evaluator("main", self.device, number=number, repeat=repeat, min_repeat_ms=0)
        return list(timer(*self._args(inputs)).results)
