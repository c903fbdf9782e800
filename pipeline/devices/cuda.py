"""CUDA device code: how TVM's generated CUDA C becomes the cubin embedded in ``model.so``.

TVM 0.27's CUDA codegen hands its CUDA C to ``ffi.Module.create.cuda`` (registered by the wheel's
``libtvm_runtime_cuda.so``), which compiles it through the global callback ``tvm_callback_cuda_compile`` into a
module that serialises as a cubin. Without that library loaded (no GPU driver here), TVM keeps the *source* in
``model.so`` and a device would have to compile it at load time, through a Python callback the on-device runtime
does not have. So a build for a CUDA target:

1. loads ``libtvm_runtime_cuda.so`` (``load_cuda_runtime``): it needs ``libcudart.so.13`` (pinned
   ``nvidia-cuda-runtime`` wheel) and ``libcuda.so.1``, the driver. Where no driver is installed, a stand-in
   built from ``cuda_driver_stub.c`` provides the nine driver symbols the library links against; every one
   returns "no device". Nothing at compile time calls them: they only let the library load.
2. installs ``compiling_for(sm)`` as the compile callback: NVRTC from the pinned ``nvidia-cuda-nvrtc-cu12``
   wheel compiles for exactly the preset's ``sm_XX`` (NVRTC 12.9 targets sm_50 .. sm_121, all presets included;
   the system ``nvcc`` 13 dropped sm_72, Jetson Xavier), headers from the pinned CCCL wheel and, for fp16 builds,
   ``cuda_fp16.h`` (which NVRTC does not build in), the CUDA 12.9 runtime wheel's. No CUDA toolkit.

Each build keeps what it compiled (``DeviceCode.save``):

    build/<model>/<target>/device/kernels.cu      the CUDA C TVM generated
    build/<model>/<target>/device/kernels.cubin   the ELF cubin embedded in model.so
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from atrous.pipeline import artifact as art
from atrous.pipeline.errors import ToolchainError
from atrous.pipeline.global_hook import registered

CALLBACK = "tvm_callback_cuda_compile"
PIP_PACKAGES = ("cuda-bindings==12.9.10 nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-cccl-cu12==12.9.27 "
                "nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-runtime==13.0.96")
EM_CUDA = 190  # ELF machine number of NVIDIA cubins
STUB_SOURCE = Path(__file__).resolve().parent / "cuda_driver_stub.c"


def _missing(what: str) -> ToolchainError:
    return ToolchainError(f"compiling for a CUDA target needs {what}; install the pinned CUDA compiler "
                          f"packages with: pip install {PIP_PACKAGES} (make venv does)")


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as err:
        raise _missing("NVRTC (cuda-bindings, nvidia-cuda-nvrtc-cu12)") from err
    return nvrtc


def _check(result, what: str) -> None:
    if int(result) != 0:
        raise ToolchainError(f"NVRTC failed to {what}: {result}")


@functools.lru_cache(maxsize=None)
def nvrtc_version() -> str:
    err, major, minor = _nvrtc().nvrtcVersion()
    if int(err) != 0:
        raise _missing(f"a loadable NVRTC ({err})")
    return f"{major}.{minor}"


@functools.lru_cache(maxsize=None)
def supported_archs() -> tuple[str, ...]:
    """The ``sm_XX`` NVRTC can compile for."""
    err, archs = _nvrtc().nvrtcGetSupportedArchs()
    _check(err, "list its architectures")
    return tuple(f"sm_{a}" for a in archs)


def require_arch(sm: str, preset_name: str) -> None:
    """Refuse an architecture this NVRTC cannot target, naming what can."""
    known = supported_archs()
    if sm not in known:
        raise ToolchainError(f"target '{preset_name}' needs device code for {sm}, which NVRTC "
                             f"{nvrtc_version()} cannot generate (it targets {known[0]} .. {known[-1]}); "
                             f"install the pinned CUDA 12.9 NVRTC: pip install {PIP_PACKAGES}")


def _include_dirs() -> list[str]:
    """CCCL's headers, and the CUDA 12.9 runtime headers of the same release as NVRTC (``cuda_fp16.h``: fp16
    kernels; the CUDA 13 runtime wheel's headers are a newer release than this compiler)."""
    try:
        import nvidia.cuda_cccl as cccl
    except ImportError as err:
        raise _missing("the CCCL headers (nvidia-cuda-cccl-cu12)") from err
    try:
        import nvidia.cuda_runtime as runtime
    except ImportError as err:
        raise _missing("the CUDA 12.9 headers (nvidia-cuda-runtime-cu12)") from err
    return [str(Path(cccl.__file__).resolve().parent / "include"), str(Path(runtime.__path__[0]) / "include")]


def compile_source(code: str, sm: str, fmt: str = "cubin") -> bytes:
    """CUDA C -> cubin (or PTX, ``fmt="ptx"``) for ``sm`` with NVRTC; a failure shows the compiler's log."""
    nvrtc = _nvrtc()
    arch = sm if fmt == "cubin" else sm.replace("sm_", "compute_")
    options = [f"--gpu-architecture={arch}", "-default-device", "-std=c++17", "--device-int128",
               *(f"-I{d}" for d in _include_dirs())]
    err, program = nvrtc.nvrtcCreateProgram(code.encode(), b"kernels.cu", 0, [], [])
    _check(err, "create a program")
    try:
        result, = nvrtc.nvrtcCompileProgram(program, len(options), [o.encode() for o in options])
        if int(result) != 0:
            err, size = nvrtc.nvrtcGetProgramLogSize(program)
            log = bytearray(size)
            nvrtc.nvrtcGetProgramLog(program, log)
            errors = [line for line in log.decode(errors="replace").splitlines() if "error" in line]
            raise ToolchainError(f"NVRTC {nvrtc_version()} could not compile the generated CUDA code for {sm}:\n"
                                 + "\n".join(errors[:20] or [str(result)]))
        size_of, get = ((nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if fmt == "cubin"
                        else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX))
        err, size = size_of(program)
        _check(err, f"size its {fmt}")
        binary = bytearray(size)
        err, = get(program, binary)
        _check(err, f"return its {fmt}")
        return bytes(binary).rstrip(b"\0") if fmt == "ptx" else bytes(binary)
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def _cudart() -> Path:
    try:
        import nvidia.cu13 as cu13
    except ImportError as err:
        raise _missing("the CUDA 13 runtime library (nvidia-cuda-runtime)") from err
    return Path(cu13.__path__[0]) / "lib" / "libcudart.so.13"


def _driver_stub(build_root: Path) -> Path:
    """The stand-in ``libcuda.so.1`` for machines without an NVIDIA driver (built once, with ``cc``)."""
    out = build_root / "cuda-driver-stub" / "libcuda.so.1"
    if out.is_file() and out.stat().st_mtime >= STUB_SOURCE.stat().st_mtime:
        return out
    compiler = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if compiler is None:
        raise ToolchainError("compiling for a CUDA target on a machine without an NVIDIA driver needs a C "
                             "compiler; install it with: sudo apt-get install gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(".libcuda.so.1.partial")
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o", str(partial),
                           str(STUB_SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ToolchainError(f"building the driver stand-in failed: {done.stderr.strip()}")
    partial.rename(out)
    return out


@functools.lru_cache(maxsize=None)
def load_cuda_runtime(build_root: Path = art.BUILD_ROOT) -> str:
    """Load TVM's CUDA runtime into this process so builds serialise cubins; returns which driver it uses
    ("nvidia" or "stand-in")."""
    import tvm
    import tvm_ffi

    driver = "nvidia"
    if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
        try:
            ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        except OSError:
            ctypes.CDLL(str(_driver_stub(Path(build_root).resolve())), mode=ctypes.RTLD_GLOBAL)
            driver = "stand-in"
        ctypes.CDLL(str(_cudart()), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"), mode=ctypes.RTLD_GLOBAL)
    if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
        raise ToolchainError("TVM's CUDA runtime (tvm/lib/libtvm_runtime_cuda.so) loaded but registered no CUDA "
                             "module factory; reinstall the pinned apache-tvm wheel")
    return driver


@dataclass
class DeviceCode:
    """What one build compiled: the CUDA C sources and their cubins (TVM makes one per build)."""

    sm: str
    sources: list[str] = field(default_factory=list)
    binaries: list[bytes] = field(default_factory=list)

    def save(self, directory: Path) -> None:
        if not self.binaries:
            raise ToolchainError(f"the build produced no CUDA device code for {self.sm}")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "kernels.cu").write_text("\n".join(self.sources))
        (directory / "kernels.cubin").write_bytes(self.binaries[-1])


@contextlib.contextmanager
def compiling_for(sm: str, preset_name: str, build_root: Path = art.BUILD_ROOT):
    """While the block builds, CUDA C compiles to ``sm`` cubins; yields the ``DeviceCode`` it collects."""
    require_arch(sm, preset_name)
    _include_dirs()
    load_cuda_runtime(Path(build_root))
    code = DeviceCode(sm)

    def callback(source):
        binary = compile_source(str(source), sm)
        code.sources.append(str(source))
        code.binaries.append(binary)
        return binary

    with registered(CALLBACK, callback):  # compiles for this build's sm only
        yield code


@dataclass(frozen=True)
class CubinInfo:
    machine: int  # ELF e_machine (190 for CUDA)
    sm: str  # the architecture in the ELF flags
    kernels: tuple[str, ...]  # the entry points (.text.<name> sections)


def inspect_cubin(data: bytes) -> CubinInfo:
    """Read a cubin's ELF header and section names: which GPU it is for and which kernels it holds."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not a 64-bit ELF cubin")
    machine, = struct.unpack_from("<H", data, 18)
    shoff, = struct.unpack_from("<Q", data, 40)
    flags, = struct.unpack_from("<I", data, 48)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
    names_at, = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 24)

    def name(offset):
        start = names_at + offset
        return data[start:data.index(b"\0", start)].decode()

    sections = [name(struct.unpack_from("<I", data, shoff + i * shentsize)[0]) for i in range(shnum)]
    kernels = tuple(s[len(".text."):] for s in sections if s.startswith(".text."))
    return CubinInfo(machine, f"sm_{_elf_arch(flags)}", kernels)


def _elf_arch(flags: int) -> int:
    """The SM number in a cubin's e_flags: bits 8-15 in the ELF ABI of CUDA >= 12.8, bits 0-7 before."""
    new, old = (flags >> 8) & 0xFF, flags & 0xFF
    return new if new >= 50 else old
