#!/usr/bin/env python3
"""The whole GPU check, on a machine with only an NVIDIA driver, Python, NumPy and PyTorch (no TVM, no compiler).

It runs from the directory `make gpu-pack` (atrous.pipeline.devices.gpupack) writes: one atrous bundle per model
(model.so with its cubin, the runtime, golden data, ``model.ts`` = the PyTorch model as TorchScript, model.onnx).
For each model:

1. ``run.sh``: atrous's runtime on the GPU vs PyTorch's CPU outputs stored at compile time (the verify tolerance);
2. atrous's outputs vs PyTorch on this GPU (cuDNN), same inputs: max-abs and relative L2 error;
3. latency, median of ``--repeat`` runs after warm-up, side by side: atrous (``atrous-run --repeat``, including
   its host<->device copies), PyTorch (CUDA-synchronised, without copies), ONNX Runtime's CUDA provider if
   installed. Ratios are what to compare; absolute numbers drift between machines.

Writes ``results.json`` and ``results.md`` beside itself; exits 1 if any model failed its check.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def errors(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    diff = actual.astype(np.float64) - expected.astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    norm = float(np.linalg.norm(expected.astype(np.float64)))
    return float(np.max(np.abs(diff))) / scale, float(np.linalg.norm(diff)) / norm if norm else float(np.linalg.norm(diff))


def _numbered(directory: Path, kind: str) -> list[Path]:
    """``kind0.npy``, ``kind1.npy``, ... in ``directory``, in index order (as bundles and atrous-run name them)."""
    return sorted(directory.glob(f"{kind}*.npy"), key=lambda p: int(p.stem[len(kind):]))


def _golden(bundle: Path, kind: str) -> list[np.ndarray]:
    return [np.load(p) for p in _numbered(bundle / "golden", kind)]


def atrous_outputs(bundle: Path) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(bundle / "bin" / "atrous-run"), str(bundle / "model.so"), "--output-dir", tmp]
        for path in _numbered(bundle / "golden", "input"):
            command += ["--input", str(path)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip() or done.stdout.strip())
        return [np.load(p) for p in _numbered(Path(tmp), "output")]


def atrous_latency_ms(bundle: Path, repeat: int) -> float:
    done = subprocess.run([str(bundle / "run.sh"), "--repeat", str(repeat)], capture_output=True, text=True)
    found = re.search(r"latency: median ([0-9.]+) ms", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(done.stderr.strip() or done.stdout.strip())
    return float(found.group(1))


def torch_run(bundle: Path, repeat: int):
    import torch

    model = torch.jit.load(str(bundle / "model.ts"), map_location="cuda").eval()
    inputs = [torch.from_numpy(a).cuda() for a in _golden(bundle, "input")]
    with torch.no_grad():
        out = model(*inputs)
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        values = [o.float().cpu().numpy() for o in outs]
        for _ in range(3):
            model(*inputs)
        torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            model(*inputs)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1e3)
    return values, float(np.median(times))


def ort_latency_ms(bundle: Path, repeat: int) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CUDAExecutionProvider"])
    feeds = {i.name: a for i, a in zip(session.get_inputs(), _golden(bundle, "input"))}
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def check(bundle: Path, repeat: int, rel_l2: float) -> dict:
    row = {"model": bundle.name}
    verify = subprocess.run([str(bundle / "run.sh")], capture_output=True, text=True)
    row["vs_pytorch_cpu"] = verify.stdout.strip().splitlines()
    row["ok"] = verify.returncode == 0
    if verify.returncode != 0:
        row["error"] = (verify.stderr.strip() or verify.stdout.strip()).splitlines()[-1:]
        return row
    ours = atrous_outputs(bundle)
    theirs, row["pytorch_ms"] = torch_run(bundle, repeat)
    pairs = [errors(a, b) for a, b in zip(ours, theirs)]
    row["vs_pytorch_gpu"] = [{"max_abs": m, "rel_l2": r} for m, r in pairs]
    row["ok"] = all(r <= rel_l2 for _, r in pairs)
    row["atrous_ms"] = atrous_latency_ms(bundle, repeat)
    row["ort_cuda_ms"] = ort_latency_ms(bundle, repeat)
    return row


def markdown(rows: list[dict], gpu: str, repeat: int) -> str:
    lines = [f"GPU: {gpu}; median of {repeat} runs; ratio = PyTorch ms / atrous ms (> 1: atrous faster)", "",
             "| model | ok | rel-L2 vs PyTorch GPU | atrous ms | PyTorch ms | ORT CUDA ms | ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "atrous_ms" not in r:
            lines.append(f"| {r['model']} | no | {' '.join(r.get('error', []))} | | | | |")
            continue
        rel = max(e["rel_l2"] for e in r["vs_pytorch_gpu"])
        ort = f"{r['ort_cuda_ms']:.3f}" if r["ort_cuda_ms"] else "n/a"
        lines.append(f"| {r['model']} | {'yes' if r['ok'] else 'NO'} | {rel:.2e} | {r['atrous_ms']:.3f} | "
                     f"{r['pytorch_ms']:.3f} | {ort} | {r['pytorch_ms'] / r['atrous_ms']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rel-l2", type=float, default=1e-4, help="tolerance vs PyTorch on the GPU")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_check: needs PyTorch (pip install torch)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_check: PyTorch sees no CUDA GPU here; run this on the GPU machine", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    rows = []
    for bundle in sorted(p for p in (HERE / "models").iterdir() if (p / "run.sh").is_file()):
        try:
            rows.append(check(bundle, args.repeat, args.rel_l2))
        except Exception as err:  # one model's failure is reported, the others still run
            rows.append({"model": bundle.name, "ok": False, "error": [str(err).splitlines()[-1] if str(err) else repr(err)]})
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "rows": rows}, indent=1))
    text = markdown(rows, gpu, args.repeat)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
