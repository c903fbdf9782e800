"""Side-by-side latency in one process: the compiled model, PyTorch eager and ONNX Runtime on the same inputs,
with the same thread count. Results are ratios to ONNX Runtime; absolute times on shared machines drift."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from atrous.pipeline.artifact import Artifact
from atrous.pipeline.reference import onnxruntime_session
from atrous.pipeline.runner import CompiledModel


@dataclass(frozen=True)
class Timing:
    runtime: str
    median_ms: float
    min_ms: float
    runs: int
    threads: int  # the threads this runtime really used (read back from it, not the count asked for)

    def as_dict(self) -> dict:
        return asdict(self)


def _timing(name: str, seconds: list[float], threads: int) -> Timing:
    return Timing(name, 1e3 * statistics.median(seconds), 1e3 * min(seconds), len(seconds), threads)


def _loop(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_atrous(artifact: Artifact, inputs: dict, repeat: int) -> Timing:
    model = CompiledModel(artifact)
    return _timing("atrous", model.time(inputs, number=1, repeat=repeat), model.threads)


def time_pytorch(module, inputs: dict, threads: int, repeat: int) -> Timing:
    import torch

    torch.set_num_threads(threads)
    args = [torch.from_numpy(v) for v in inputs.values()]
    with torch.inference_mode():
        return _timing("pytorch", _loop(lambda: module(*args), repeat), torch.get_num_threads())


def time_onnxruntime(onnx_path, inputs: dict, threads: int, repeat: int, name: str = "onnxruntime") -> Timing:
    session = onnxruntime_session(onnx_path, threads)
    used = session.get_session_options().intra_op_num_threads  # ORT runs exactly this many (0 would be "all")
    return _timing(name, _loop(lambda: session.run(None, inputs), repeat), used)


def bench(artifact: Artifact, module, threads: int, repeat: int = 10) -> list[Timing]:
    """Time every runtime available for this artifact (PyTorch only when the source was a module; for an int8
    build quantized here, ONNX Runtime on its QDQ graph too: "onnxruntime-int8")."""
    inputs, _ = artifact.load_golden()
    rows = [time_atrous(artifact, inputs, repeat)]
    if module is not None:
        rows.append(time_pytorch(module, inputs, threads, repeat))
    rows.append(time_onnxruntime(artifact.onnx, inputs, threads, repeat))
    if artifact.qdq.is_file():
        rows.append(time_onnxruntime(artifact.qdq, inputs, threads, repeat, "onnxruntime-int8"))
    return rows


def table(rows: list[Timing]) -> str:
    ort = next((r.median_ms for r in rows if r.runtime == "onnxruntime"), None)
    lines = [f"{'runtime':<16} {'threads':>7} {'median ms':>10} {'min ms':>10} {'vs ORT':>8}"]
    for r in rows:
        ratio = f"{ort / r.median_ms:7.2f}x" if ort else "-"
        lines.append(f"{r.runtime:<16} {r.threads:>7} {r.median_ms:10.2f} {r.min_ms:10.2f} {ratio:>8}")
    lines.append("(vs ORT > 1 means faster than ONNX Runtime)")
    return "\n".join(lines)


def publish(text: str, out: str | None) -> None:
    """Print a benchmark's markdown and, if ``out`` is given, add it there (BENCHMARKS.md) newest first: before the
    file's first table heading (``## ``), after any title above it."""
    print(text)
    if out:
        path = Path(out)
        old = path.read_text() if path.is_file() else ""
        at = 0 if old.startswith("## ") else old.find("\n## ") + 1
        if at <= 0 and not old.startswith("## "):
            at = len(old)
        path.write_text(old[:at] + text.strip("\n") + "\n\n" + old[at:])
