"""The build directory of one (model, target): its layout, its metadata, and atomic creation.

    build/<model>/<target>/
        model.onnx           the graph that was compiled (for int8 builds: the fp32 graph before quantization)
        model.int8.onnx      int8 builds: the QDQ graph that was compiled (pipeline/quantize.py)
        model.so             the compiled model (TVM Relax VM executable)
        meta.json            inputs/outputs (names, shapes, dtypes), target, versions, fingerprint
        golden/inputs.npz    seeded example inputs
        golden/expected.npz  the reference outputs (PyTorch, or ONNX Runtime for ONNX files)

A directory is written under a temporary name and renamed into place only when complete, so a failed compile
leaves nothing behind and never clobbers the previous good artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

BUILD_ROOT = Path(os.environ.get("ATROUS_BUILD_DIR", "build"))


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, name: str, array: np.ndarray) -> "TensorSpec":
        return cls(name, tuple(int(d) for d in array.shape), str(array.dtype))


@dataclass(frozen=True)
class Meta:
    model: str
    target: str
    target_json: dict
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    reference: str
    fingerprint: str
    versions: dict
    database: str | None = None  # the tuning database applied (None: untuned)
    tuned_tasks: int = 0  # kernels scheduled from the database; the others use the untuned default
    total_tasks: int = 0
    options: dict = field(default_factory=dict)  # the graph rewrites it was built with (OptimizeOptions.key())
    winograd: dict = field(default_factory=dict)  # {"F(4x4)": convs, ..., "direct": convs, "measured": convs}
    kernel_flops: dict = field(default_factory=dict)  # {kernel name: FLOPs} (pipeline/flops.py), for profiles
    rule_failures: tuple[str, ...] = ()  # default schedule rules that raised on a kernel, one line each (guard.py)
    exporter: str = ""  # how the ONNX graph was made: "dynamo", "torchscript" (export.py) or "file"
    reference_note: str = ""  # why there is no reference, or how it was obtained (interface.reference_outputs)
    exporter_fallback: str | None = None  # why the dynamo exporter was not used, when it was asked for
    precision: str = "fp32"  # "fp32", "int8" (a QDQ graph: quantized here, or given) or "fp16"
    calibration: str = ""  # int8: what the activations were calibrated on (quantize.Calibration.describe)
    output_steps: dict = field(default_factory=dict)  # int8: {output: its quantization step} (quantize.py)
    int8_kernels: str = ""  # int8: what the convs run on (interface.int8_kernels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Meta":
        raw = json.loads(text)
        for key in ("inputs", "outputs"):
            raw[key] = tuple(TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in raw[key])
        raw["rule_failures"] = tuple(raw.get("rule_failures", ()))
        return cls(**raw)


@dataclass(frozen=True)
class Artifact:
    root: Path

    onnx = property(lambda self: self.root / "model.onnx")
    qdq = property(lambda self: self.root / "model.int8.onnx")
    library = property(lambda self: self.root / "model.so")
    meta_path = property(lambda self: self.root / "meta.json")
    golden_inputs = property(lambda self: self.root / "golden" / "inputs.npz")
    golden_expected = property(lambda self: self.root / "golden" / "expected.npz")

    def meta(self) -> Meta:
        return Meta.from_json(self.meta_path.read_text())

    def exists(self) -> bool:
        return self.meta_path.is_file() and self.library.is_file()

    def load_golden(self) -> tuple[dict, dict]:
        with np.load(self.golden_inputs) as i, np.load(self.golden_expected) as e:
            return dict(i), dict(e)


def artifact_dir(model: str, target: str, root: Path | None = None, precision: str = "fp32") -> Path:
    """``build/<model>/<target>``; reduced-precision builds beside it as ``<target>-int8``/``<target>-fp16``."""
    return Path(root or BUILD_ROOT) / model / (target if precision == "fp32" else f"{target}-{precision}")


class Staging:
    """A temporary directory beside ``final``. ``commit()`` moves it into place; anything else discards it."""

    def __init__(self, final: Path):
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))

    def commit(self) -> Path:
        self.path.chmod(0o755)  # mkdtemp creates 0700
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            self.final.rename(old)
            self.path.rename(self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.path.rename(self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):  # leave no empty <model>/ directory behind a failed first build
            self.final.parent.rmdir()


@contextlib.contextmanager
def staged(final: Path):
    """Yield a ``Staging``; the caller commits it when complete. Uncommitted work is always removed."""
    stage = Staging(final)
    try:
        yield stage
    finally:
        stage.discard()
