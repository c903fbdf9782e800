"""The Vulkan backend's two halves meet here: TVM's ``target.build.vulkan`` hook and the runtime library.

TVM 0.27 from PyPI has no Vulkan codegen or runtime. A build for a Vulkan target goes:

    lowered device kernels --glsl.py--> GLSL 450 --glslangValidator/spirv-val--> SPIR-V
        --payload.py--> one "vulkan" module (runtime/src/vulkan, ``atrous.vulkan.module_create``)

and TVM imports that module into ``model.so``; ``export_library`` serialises it and any process that has loaded
``libatrous_vulkan.so`` (this one through ``load_runtime``, the on-device runtime by itself) loads it back.
Each build keeps its shaders for inspection (``VulkanCode.save``):

    build/<model>/<target>/device/<kernel>.comp   the GLSL of each kernel
    build/<model>/<target>/device/<kernel>.spv    its SPIR-V
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from dataclasses import dataclass, field
from pathlib import Path

from atrous.pipeline import artifact as art
from atrous.pipeline.errors import AtrousError, ToolchainError
from atrous.pipeline.global_hook import registered
from atrous.pipeline.tir_walk import statements
from atrous.pipeline.devices.vulkan.glsl import Shader, kernel_to_glsl
from atrous.pipeline.devices.vulkan.payload import pack
from atrous.pipeline.devices.vulkan.spirv import compile_shaders, require_tools

BUILD_HOOK = "target.build.vulkan"
LIBRARY = "libatrous_vulkan.so"


@functools.lru_cache(maxsize=None)
def load_runtime(build_root: Path = art.BUILD_ROOT) -> Path:
    """Load this machine's ``libatrous_vulkan.so`` (building the runtime first if needed) into the process, so
    TVM can create, save, load and run Vulkan modules. Loading needs no Vulkan driver; running does."""
    import tvm  # noqa: F401  the wheel's libtvm_runtime/libtvm_ffi first: the library's own copies must not load

    from atrous.pipeline.devices.runtime_build import build_runtime

    library = build_runtime(root=Path(build_root)).lib / LIBRARY
    if not library.is_file():
        raise ToolchainError(f"the runtime build has no {LIBRARY}; rebuild it with `atrous runtime`")
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    return library


@dataclass
class VulkanCode:
    """What one build generated: each kernel's GLSL and SPIR-V."""

    preset: str
    shaders: list[Shader] = field(default_factory=list)
    binaries: list[bytes] = field(default_factory=list)
    error: AtrousError | None = None  # what stopped the build, as raised (TVM re-raises it as a RuntimeError)

    def save(self, directory: Path) -> None:
        if not self.shaders:
            raise ToolchainError(f"the build produced no Vulkan kernels for {self.preset}")
        directory.mkdir(parents=True, exist_ok=True)
        for shader, binary in zip(self.shaders, self.binaries):
            (directory / f"{shader.info.name}.comp").write_text(shader.source)
            (directory / f"{shader.info.name}.spv").write_bytes(binary)


def _limits(target) -> dict:
    return {str(k): target.attrs[k] for k in target.attrs}


# Elements of the largest buffer whose kernels may have every index narrowed to 32 bits: in-bounds indices then
# fit with 32x headroom for the products TVM forms on the way (fused thread index x stride).
NARROW_LIMIT = 2 ** 26


def narrow_indices(mod):
    """64-bit indices -> 32 bits, for devices without shaderInt64. TVM's NarrowDataType narrows what it can prove
    in range but keeps thread indices whose launch extents are int64 (most kernels); ForceNarrowIndexToInt32
    narrows every index, which is exact when every buffer is small (NARROW_LIMIT) and none holds 64-bit integer
    data (it would narrow the data too). Whatever stays 64-bit is refused by the GLSL generator."""
    import tvm

    buffers = [s.buffer for func in mod.functions.values() for s in statements(func.body)
               if type(s).__name__ in ("DeclBuffer", "AllocBuffer")]

    def small(buffer) -> bool:
        size = 1
        for extent in buffer.shape:
            if type(extent).__name__ != "IntImm":
                return False
            size *= int(extent.value)
        return size < NARROW_LIMIT

    if all(str(b.dtype) not in ("int64", "uint64") and small(b) for b in buffers):
        return tvm.tirx.transform.ForceNarrowIndexToInt32()(mod)
    return tvm.tirx.transform.NarrowDataType(32)(mod)


def build_kernels(mod, target, code: VulkanCode):
    """``target.build.vulkan``: the device kernels of ``mod`` -> a Vulkan runtime module."""
    import tvm

    limits = _limits(target)
    if not limits.get("supports_int64", False):
        mod = narrow_indices(mod)
    shaders = [kernel_to_glsl(str(func.attrs.get("global_symbol", gv.name_hint)), func, limits)
               for gv, func in mod.functions_items()]
    binaries = compile_shaders(shaders)
    code.shaders += shaders
    code.binaries += binaries
    return tvm.get_global_func("atrous.vulkan.module_create")(pack(list(zip((s.info for s in shaders), binaries))))


@contextlib.contextmanager
def compiling_for(preset_name: str, build_root: Path = art.BUILD_ROOT):
    """While the block builds, TVM's Vulkan kernels become shaders; yields the ``VulkanCode`` it collects."""
    require_tools()
    load_runtime(Path(build_root))
    code = VulkanCode(preset_name)

    def hook(mod, target):
        try:
            return build_kernels(mod, target, code)
        except AtrousError as err:
            code.error = err
            raise

    with registered(BUILD_HOOK, hook):  # collects into this build's VulkanCode only
        yield code


def device_info() -> dict[str, str]:
    """What the Vulkan device this process would run on reports (name, type, api, limits); raises with the
    package to install when there is no loader or device."""
    import tvm

    load_runtime()
    text = tvm.get_global_func("atrous.vulkan.device_info")()
    return dict(item.split("=", 1) for item in str(text).split("; "))
