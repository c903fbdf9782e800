"""Pack the GPU check: bundles of zoo models for one CUDA target plus ``runtime/gpu_check.py``, in one directory
that a machine with only a GPU driver, Python, NumPy and PyTorch runs as is (no TVM, no compiler there).

    python -m atrous.pipeline.devices.gpupack --target h100 [--models a,b] [--preset tiny] [--out build/gpu-check/h100]
    # on the GPU machine:  python3 gpu_check.py    -> results.md / results.json

Each ``models/<name>/`` is the model's bundle plus ``model.onnx`` (for ONNX Runtime's CUDA provider) and
``model.ts``, the PyTorch model traced to TorchScript, which the check runs on the GPU as the reference.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime"  # atrous/runtime when installed


def pack(target: str, names: list[str], preset: str, out: Path, build_root: Path | None = None) -> Path:
    import torch

    from atrous import targets
    from atrous.pipeline import artifact as art
    from atrous.pipeline import source
    from atrous.pipeline.devices.bundle import make_bundle
    from atrous.pipeline.interface import CompileArgs, compile_model

    gpu = targets.get_target(target)
    if gpu.family != "cuda":
        raise SystemExit(f"gpupack: '{target}' is not a CUDA target")
    with art.staged(out) as stage:
        for name in names:
            src = source.from_zoo(name, preset)
            artifact = compile_model(CompileArgs(src, gpu, build_root))
            dest = stage.path / "models" / src.name
            shutil.copytree(make_bundle(artifact, gpu.tolerance), dest, symlinks=True)
            shutil.copy2(artifact.onnx, dest / "model.onnx")
            example = tuple(torch.from_numpy(v) for v in src.inputs.values())
            with torch.no_grad():
                torch.jit.trace(src.module().eval(), example, check_trace=False).save(str(dest / "model.ts"))
            print(f"packed {src.name} for {target}", flush=True)
        shutil.copy2(RUNTIME_DIR / "gpu_check.py", stage.path / "gpu_check.py")
        stage.commit()
    return out


def main(argv=None) -> int:
    from atrous.models import MODELS

    parser = argparse.ArgumentParser(description="pack zoo bundles + gpu_check.py for a CUDA target")
    parser.add_argument("--target", default="h100")
    parser.add_argument("--models", default=",".join(sorted(MODELS)))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or Path("build") / "gpu-check" / args.target
    pack(args.target, [m for m in args.models.split(",") if m], args.preset, out)
    print(f"gpu check packed in {out}: copy it to the GPU machine and run: python3 gpu_check.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
