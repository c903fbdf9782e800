"""Stage: fp32 ONNX -> QDQ ONNX, by ONNX Runtime's post-training static quantizer.

Calibration and the insertion of QuantizeLinear/DequantizeLinear pairs are ONNX Runtime's
(``onnxruntime.quantization.quantize_static``); the compiler's own work is lowering the QDQ graph to integer
kernels (passes/integer_convs.py, passes/int8_kernels.py). The recipe:

* weights: int8, symmetric, one scale per output channel (``per_channel``); 7-bit on x86 CPUs without VNNI
  (``reduce_range``, as ONNX Runtime advises there: their fast int8 instruction, ``vpmaddubsw``, saturates on two
  full-range products);
* activations: uint8, one scale and zero point per tensor, from the min and max seen on the calibration samples
  (``CalibrationMethod.MinMax``). uint8 because the x86 dot-product instructions multiply unsigned by signed
  bytes (``vpdpbusd``); ONNX Runtime recommends U8S8 on x86 for the same reason;
* the graph is first pre-processed as ONNX Runtime's documentation asks (``quant_pre_process``: shape inference
  and its graph optimisations, batch norms folded into convs), so the quantizer sees the convs as they run.

Calibration samples: ``.npy`` files (one sample of a single-input model each) or ``.npz`` files (one array per
input name) in a directory, or ``count`` seeded example inputs drawn as the model's example inputs are. A user's
real images calibrate far better than noise: the report says which was used.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from atrous.pipeline.errors import AtrousError, InputMismatchError
from atrous.pipeline.export import quiet_logger

PRECISIONS = ("fp32", "int8", "fp16")
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class Calibration:
    """Where calibration samples come from: ``directory`` of .npy/.npz files, else ``count`` seeded inputs."""

    directory: Path | None = None
    count: int = 8
    seed: int = 0

    @classmethod
    def parse(cls, text: str | None, seed: int = 0) -> "Calibration":
        """``--calibration DIR|N``."""
        if text is None:
            return cls(seed=seed)
        if text.isdigit():
            if int(text) < 1:
                raise AtrousError("--calibration N needs at least one sample")
            return cls(count=int(text), seed=seed)
        path = Path(text)
        if not path.is_dir():
            raise AtrousError(f"--calibration {text}: not a directory of .npy/.npz samples, nor a sample count")
        return cls(directory=path, seed=seed)

    def key(self) -> dict:
        """What a quantized artifact depends on: the samples' bytes, or the count and seed."""
        if self.directory is None:
            return {"count": self.count, "seed": self.seed}
        import hashlib

        digest = hashlib.sha256()
        for path in sample_files(self.directory):
            digest.update(path.name.encode())
            with path.open("rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        return {"directory": digest.hexdigest()[:16]}

    def describe(self) -> str:
        if self.directory is None:
            return f"{self.count} seeded random input(s) (seed {self.seed}; pass --calibration DIR for real data)"
        return f"{len(sample_files(self.directory))} sample(s) from {self.directory}"


def sample_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.suffix in (".npy", ".npz"))


def is_qdq(model: onnx.ModelProto) -> bool:
    """Whether the graph is already quantized in the QDQ form (a file made by ONNX Runtime's quantizer, or by a
    PyTorch PT2E flow exported to ONNX)."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def calibration_samples(calibration: Calibration, example: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The samples, each {input name: array} with the example inputs' shapes and dtypes (checked)."""
    if calibration.directory is None:
        from atrous.pipeline.source import _random_input

        rng = np.random.default_rng(calibration.seed + 1)  # not the golden inputs verification runs on
        return [{name: _random_input(rng, value.shape, str(value.dtype)) for name, value in example.items()}
                for _ in range(calibration.count)]
    files = sample_files(calibration.directory)
    if not files:
        raise AtrousError(f"--calibration {calibration.directory}: no .npy or .npz files in it")
    samples = []
    for path in files:
        if path.suffix == ".npy":
            if len(example) != 1:
                raise InputMismatchError(f"{path}: the model has inputs {', '.join(example)}; give each sample "
                                         "as an .npz with one array per input name")
            sample = {next(iter(example)): np.load(path)}
        else:
            with np.load(path) as data:
                sample = {name: data[name] for name in data.files}
        samples.append(_checked(path, sample, example))
    return samples


def _checked(path: Path, sample: dict, example: dict) -> dict:
    if set(sample) != set(example):
        raise InputMismatchError(f"{path}: holds {', '.join(sorted(sample))}; the model's inputs are "
                                 f"{', '.join(example)}")
    out = {}
    for name, value in sample.items():
        want = example[name]
        if value.shape != want.shape and value.shape == want.shape[1:]:
            value = value[None]  # one sample without its batch axis
        if value.shape != want.shape:
            raise InputMismatchError(f"{path}: input '{name}' has shape {list(value.shape)}; the model is "
                                     f"compiled for {list(want.shape)}")
        out[name] = value.astype(want.dtype)
    return out


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of samples."""

    def __init__(self, samples):
        self._samples = iter(samples)

    def get_next(self):
        return next(self._samples, None)


def quantize(onnx_path: Path, out_path: Path, calibration: Calibration, example: dict[str, np.ndarray],
             reduce_range: bool = False) -> Path:
    """Write the QDQ int8 graph of ``onnx_path`` to ``out_path`` (see the module docstring). ``reduce_range``:
    7-bit weights (ONNX Runtime's own advice for x86 CPUs without VNNI), so that ``vpmaddubsw``'s pairs of
    byte products cannot saturate int16 (schedules/int8_tiles.py)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    samples = calibration_samples(calibration, example)
    # ONNX Runtime's quantizer logs advice through the root logger (pre-processing, already done here)
    with tempfile.TemporaryDirectory(prefix="atrous-quant-") as scratch, quiet_logger():
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_path), _Reader(samples), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return out_path


def output_steps(model: onnx.ModelProto) -> dict[str, float]:
    """Graph output -> the scale of the DequantizeLinear that produces it (one quantization step), for outputs
    that are dequantized int8 values; comparing two int8 runs counts differences in these steps."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    steps = {}
    for output in model.graph.output:
        node = producers.get(output.name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in inits:
            continue
        scale = onnx.numpy_helper.to_array(inits[node.input[1]])
        if scale.size == 1:
            steps[output.name] = float(scale.reshape(()))
    return steps
