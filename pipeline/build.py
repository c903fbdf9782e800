"""Stage: Relax -> a shared library for the device (``model.so``), linked with the preset's compiler."""

from __future__ import annotations

import shutil
from pathlib import Path

import tvm

from .errors import ToolchainError
from .signature import write_signature_source


def linker_for(preset) -> str:
    """The C++ compiler that links the model library; raises with the Debian package to install if missing."""
    compiler = preset.cross_compiler or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), "c++")
    if shutil.which(compiler) is None:
        packages = " ".join(preset.toolchain_packages) or "g++"
        raise ToolchainError(f"target '{preset.name}' needs the C++ compiler '{compiler}' to link the model; "
                             f"install it with: sudo apt-get install {packages}")
    return compiler


def build(mod: tvm.IRModule, preset, device_dir: Path | None = None):
    """Compile an optimized module for the preset's target; returns the Relax executable. For GPU targets the
    device code is compiled ahead of time (pipeline/cuda.py) and kept in ``device_dir`` when given."""
    target = preset.tvm_target()
    if target.kind.name != "cuda":
        return tvm.compile(mod, target=target)
    from .cuda import compiling_for

    with compiling_for(str(target.attrs["arch"]), preset.name) as device_code:
        executable = tvm.compile(mod, target=target)
    if device_dir is not None:
        device_code.save(device_dir)
    return executable


def export(executable, path: Path, preset, signature: str) -> Path:
    """Write the executable as a shared library linked by the preset's toolchain, carrying its ``signature``
    (see pipeline/signature.py) for the on-device runtime."""
    source = write_signature_source(signature, path.with_name("signature.cc"))
    try:
        executable.export_library(str(path), cc=linker_for(preset), addons=[str(source)])
    finally:
        source.unlink(missing_ok=True)
    return path
