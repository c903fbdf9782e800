"""Peak resident memory of one run of a model, atrous or ONNX Runtime, each in a process of its own.

``python -m atrous.pipeline.bench.memory atrous ARTIFACT_DIR``
/ ``python -m atrous.pipeline.bench.memory onnxruntime MODEL.onnx INPUTS.npz``
imports the runtime, reads its resident set (VmRSS), loads the model, runs it once on the inputs and prints
``{"baseline_mb": ..., "peak_mb": ...}``: the process's peak (VmHWM) and what it held before the model. The
difference is what the model costs at run time (weights, activations, the runtime's arenas), the figure
``make bench`` reports next to the artifact's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _run_atrous(artifact_dir: str) -> tuple[float, float]:
    import tvm  # noqa: F401 - the runtime's own memory belongs to the baseline

    from atrous.pipeline.artifact import Artifact
    from atrous.pipeline.runner import CompiledModel

    baseline = _status_mb("VmRSS")
    artifact = Artifact(Path(artifact_dir))
    inputs, _ = artifact.load_golden()
    CompiledModel(artifact).run(inputs)
    return baseline, _status_mb("VmHWM")


def _run_onnxruntime(onnx_path: str, inputs_path: str) -> tuple[float, float]:
    import numpy as np
    import onnxruntime  # noqa: F401

    from atrous.pipeline.reference import onnxruntime_session

    baseline = _status_mb("VmRSS")
    inputs = dict(np.load(inputs_path))
    onnxruntime_session(onnx_path).run(None, inputs)
    return baseline, _status_mb("VmHWM")


def measure(kind: str, *paths: str) -> dict:
    """Run ``kind`` ("atrous" or "onnxruntime") in a child process; {"baseline_mb", "peak_mb", "model_mb"}."""
    done = subprocess.run([sys.executable, "-m", "atrous.pipeline.bench.memory", kind, *map(str, paths)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"measuring the memory of {kind} failed: {done.stderr.strip()[-400:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "model_mb": result["peak_mb"] - result["baseline_mb"]}


def main(argv: list[str]) -> int:
    kind, *paths = argv
    baseline, peak = _run_atrous(*paths) if kind == "atrous" else _run_onnxruntime(*paths)
    print(json.dumps({"baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
