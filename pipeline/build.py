"""Stage: Relax -> a shared library for the device (``model.so``), linked with the preset's compiler."""

from __future__ import annotations

import shutil
from pathlib import Path

import tvm

from atrous.pipeline.errors import AtrousError, ToolchainError
from atrous.pipeline.signature import write_signature_source
from atrous.pipeline.tir_walk import statements


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
    device code is compiled ahead of time (CUDA: pipeline/devices/cuda.py, Vulkan: pipeline/devices/vulkan/) and kept in
    ``device_dir`` when given."""
    target = preset.tvm_target()
    kind = target.kind.name
    config = {}
    if kind == "cuda":
        from atrous.pipeline.devices.cuda import compiling_for

        device_code = compiling_for(str(target.attrs["arch"]), preset.name)
    elif kind == "vulkan":
        from atrous.pipeline.devices.vulkan.backend import compiling_for

        device_code = compiling_for(preset.name)
        # the GLSL generator writes scalar code: loops a schedule vectorised (dlight's GEMV) stay loops
        config = {"tirx.disable_vectorize": True}
    else:
        return tvm.compile(mod, target=target)
    check = HostStageCheck()
    with device_code as code, tvm.transform.PassContext(config=config, instruments=[check]):
        try:
            executable = tvm.compile(mod, target=target)
        except Exception:
            if getattr(code, "error", None) is not None:  # our own codegen's error, with its type and message
                raise code.error from None
            raise
    if check.unbound:
        raise AtrousError(f"kernel(s) {', '.join(check.unbound)}: a stage is not bound to GPU threads and would run "
                          "on the host over device memory (a schedule bug: please report it with the model)")
    if device_dir is not None:
        code.save(device_dir)
    return executable


@tvm.instrument.pass_instrument
class HostStageCheck:
    """Refuses a GPU kernel with a stage its schedule did not bind to threads. After SplitHostDevice the host side
    of a GPU function only allocates and launches; a store left there would be the CPU writing device memory
    (a crash on CUDA, corruption elsewhere), so the build stops and names the function."""

    def __init__(self):
        self.unbound: list[str] = []

    def run_after_pass(self, mod, info):
        if info.name != "tirx.SplitHostDevice":
            return
        for gv, func in mod.functions_items():
            target = func.attrs.get("target") if func.attrs is not None else None
            if target is None or "gpu" not in target.keys or int(func.attrs.get("calling_conv", 0)) == 2:
                continue
            if any(type(s).__name__ == "BufferStore" for s in statements(func.body)):
                self.unbound.append(gv.name_hint)


def export(executable, path: Path, preset, signature: str) -> Path:
    """Write the executable as a shared library linked by the preset's toolchain, carrying its ``signature``
    (see pipeline/signature.py) for the on-device runtime."""
    source = write_signature_source(signature, path.with_name("signature.cc"))
    try:
        executable.export_library(str(path), cc=linker_for(preset), addons=[str(source)])
    finally:
        source.unlink(missing_ok=True)
    return path
