"""Stage: build the on-device runtime library (``runtime/``) for an architecture.

The C++ sources are compiled with CMake against the TVM runtime of the pinned wheels, never a rebuilt TVM: for
the build machine's own architecture the installed packages provide ``libtvm_runtime.so`` / ``libtvm_ffi.so``;
for another architecture the wheels of the same versions are downloaded (``pip download``) and only those
libraries are taken out of them. The result is an install tree that a board can use as is:

    build/runtime/<arch>/
        bin/atrous-run  bin/atrous-rpc-server      (RPATH $ORIGIN/../lib: no LD_LIBRARY_PATH needed)
        lib/libatrous_runtime.so  lib/libtvm_runtime.so  lib/libtvm_runtime_extra.so  lib/libtvm_ffi.so
        lib/libtvm_runtime_cuda.so  lib/libcudart.so.13   (loaded only for CUDA models; bundles of others omit them)
        lib/libatrous_vulkan.so                    (the Vulkan backend's runtime: Vulkan models only)
        include/atrous/atrous.h
        tests/atrous-capi-test                     (not shipped in bundles)
        stamp                                      (what it was built from; a rebuild happens when it changes)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from atrous.pipeline import artifact as art
from atrous.pipeline.errors import ToolchainError

RUNTIME_SRC = Path(__file__).resolve().parents[2] / "runtime"  # atrous/runtime when installed


@dataclass(frozen=True)
class Arch:
    """How to build for one CPU architecture. ``compiler`` None: the build machine's own."""

    name: str
    compiler: str | None = None
    packages: tuple[str, ...] = ()
    toolchain_file: str | None = None
    wheel_platforms: tuple[str, ...] = ()


ARCHES = {
    "x86_64": Arch("x86_64", wheel_platforms=("manylinux_2_28_x86_64", "manylinux_2_24_x86_64")),
    "aarch64": Arch("aarch64", "aarch64-linux-gnu-g++", ("g++-aarch64-linux-gnu",), "cmake/aarch64-linux-gnu.cmake",
                    ("manylinux_2_28_aarch64", "manylinux_2_24_aarch64", "manylinux2014_aarch64")),
}

# What each library is called inside its wheel (and under site-packages).
# libtvm_runtime_extra holds what remote measurement calls on the device (random fill of arguments, ...);
# libtvm_runtime_cuda is TVM's CUDA device API and cubin loader, which links libcudart.so.13.
WHEEL_LIBS = {"apache-tvm": ("tvm/lib/libtvm_runtime.so", "tvm/lib/libtvm_runtime_extra.so",
                             "tvm/lib/libtvm_runtime_cuda.so"),
              "apache-tvm-ffi": ("tvm_ffi/lib/libtvm_ffi.so",),
              "nvidia-cuda-runtime": ("nvidia/cu13/lib/libcudart.so.13",)}
CUDA_LIBS = ("libtvm_runtime_cuda.so", "libcudart.so.13")
# Libraries only the models of one device kind load (bundles of other models leave them out).
DEVICE_LIBS = {"cuda": CUDA_LIBS, "vulkan": ("libatrous_vulkan.so",)}
VULKAN_INCLUDE = Path("/usr/include")


@dataclass(frozen=True)
class RuntimeBuild:
    root: Path
    arch: str

    runner = property(lambda self: self.root / "bin" / "atrous-run")
    rpc_server = property(lambda self: self.root / "bin" / "atrous-rpc-server")
    capi_test = property(lambda self: self.root / "tests" / "atrous-capi-test")
    threads_test = property(lambda self: self.root / "tests" / "atrous-threads-test")
    lib = property(lambda self: self.root / "lib")

    def size_bytes(self) -> dict[str, int]:
        """Bytes of each shipped file (bin/ and lib/)."""
        return {str(p.relative_to(self.root)): p.stat().st_size
                for d in ("bin", "lib") for p in sorted((self.root / d).iterdir())}


def host_arch() -> str:
    return os.uname().machine


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolchainError(f"building the on-device runtime needs '{tool}'; install it with: "
                             f"sudo apt-get install {package}")
    return path


def _site_package(name: str) -> Path:
    import importlib

    return Path(importlib.import_module(name).__file__).resolve().parent


def _wheel_libs(arch: Arch, cache: Path) -> Path:
    """The architecture's TVM runtime libraries from the wheels of the installed versions, in ``cache``."""
    wanted = [lib for libs in WHEEL_LIBS.values() for lib in libs]
    if all((cache / Path(lib).name).is_file() for lib in wanted):
        return cache
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{dist}=={metadata.version(dist)}" for dist in WHEEL_LIBS]
    command = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
               "-d", str(wheels), *(f"--platform={p}" for p in arch.wheel_platforms), *pins]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ToolchainError(f"could not download the {arch.name} TVM runtime ({', '.join(pins)}): "
                             f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'pip failed'}; "
                             "check the network, or put the wheels in " + str(wheels))
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for lib in wanted:
                if lib in archive.namelist():
                    (cache / Path(lib).name).write_bytes(archive.read(lib))
    missing = [lib for lib in wanted if not (cache / Path(lib).name).is_file()]
    if missing:
        raise ToolchainError(f"the downloaded {arch.name} wheels lack {', '.join(missing)}")
    return cache


def _wheel_lib_paths(arch: Arch, root: Path) -> dict[str, Path]:
    """File name -> path of every library in WHEEL_LIBS for ``arch`` (installed packages for this machine's)."""
    members = [lib for libs in WHEEL_LIBS.values() for lib in libs]
    if arch.name == host_arch():
        site = _site_package("tvm").parent
        return {Path(m).name: site / m for m in members}
    cache = _wheel_libs(arch, root / f"tvm-{arch.name}")
    return {Path(m).name: cache / Path(m).name for m in members}


def _stamp(arch: Arch, sanitize: str = "") -> str:
    digest = hashlib.sha256(f"{arch.name} {sanitize}".encode())
    # the fuzz harnesses and their corpus are not part of what ships
    sources = (p for p in RUNTIME_SRC.rglob("*") if p.is_file() and "fuzz" not in p.relative_to(RUNTIME_SRC).parts)
    for path in sorted(sources):
        digest.update(str(path.relative_to(RUNTIME_SRC)).encode())
        digest.update(path.read_bytes())
    for dist in WHEEL_LIBS:
        digest.update(metadata.version(dist).encode())
    return digest.hexdigest()[:16]


def _vulkan_headers(base: Path) -> Path:
    """A directory holding only the Vulkan headers (links into the system's): the Vulkan runtime compiles
    against them for any architecture without the build machine's other headers on the include path."""
    if not (VULKAN_INCLUDE / "vulkan" / "vulkan.h").is_file():
        raise ToolchainError("building the Vulkan runtime needs the Vulkan headers; install them with: "
                             "sudo apt-get install libvulkan-dev")
    headers = base / "vulkan-headers"
    headers.mkdir(parents=True, exist_ok=True)
    for name in ("vulkan", "vk_video"):
        link = headers / name
        if (VULKAN_INCLUDE / name).is_dir() and not link.exists():
            link.symlink_to(VULKAN_INCLUDE / name)
    return headers


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise ToolchainError(f"{what} failed:\n{tail}")


def build_runtime(arch_name: str | None = None, root: Path | None = None, sanitize: str = "") -> RuntimeBuild:
    """Build (or reuse) the runtime for ``arch_name`` (default: this machine) under ``root/runtime/<arch>``;
    ``sanitize`` ("thread", "address"...: tests only) builds all of it with that sanitizer, in <arch>-<sanitize>."""
    name = arch_name or host_arch()
    if name not in ARCHES:
        raise ToolchainError(f"no runtime build for architecture '{name}'; known: {', '.join(ARCHES)}")
    arch = ARCHES[name]
    base = Path(root or art.BUILD_ROOT) / "runtime"
    final = base / (f"{name}-{sanitize}" if sanitize else name)
    stamp = _stamp(arch, sanitize)
    if not _up_to_date(final, stamp):
        base.mkdir(parents=True, exist_ok=True)
        with FileLock(base / f".{final.name}.lock"):  # another process (a compile, a test worker) may be building it
            if not _up_to_date(final, stamp):
                _build(arch, base, final, stamp, sanitize)
    return RuntimeBuild(final, name)


def _up_to_date(final: Path, stamp: str) -> bool:
    return (final / "stamp").is_file() and (final / "stamp").read_text() == stamp


def _build(arch: Arch, base: Path, final: Path, stamp: str, sanitize: str = "") -> None:
    """Configure, compile and install the runtime into ``final`` (the caller holds the build lock)."""
    name = arch.name
    cmake = _require("cmake", "cmake")
    if arch.compiler:
        _require(arch.compiler, " ".join(arch.packages))
    else:
        _require("c++", "g++")
    libs = _wheel_lib_paths(arch, base)
    tvm_lib, ffi_lib = libs["libtvm_runtime.so"].parent, libs["libtvm_ffi.so"].parent
    with art.staged(final) as stage:
        work = stage.path / "cmake-build"
        configure = [cmake, "-S", str(RUNTIME_SRC), "-B", str(work), "-DCMAKE_BUILD_TYPE=Release",
                     f"-DTVM_FFI_INCLUDE={_site_package('tvm_ffi') / 'include'}",
                     f"-DTVM_LIB_DIR={tvm_lib}", f"-DTVM_FFI_LIB_DIR={ffi_lib}",
                     f"-DTVM_INCLUDE={_site_package('tvm') / 'include'}",
                     f"-DVULKAN_HEADERS={_vulkan_headers(base)}",
                     f"-DCMAKE_INSTALL_PREFIX={stage.path}", f"-DATROUS_SANITIZE={sanitize}"]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        if arch.toolchain_file:
            configure.append(f"-DCMAKE_TOOLCHAIN_FILE={RUNTIME_SRC / arch.toolchain_file}")
        _run(configure, f"configuring the {name} runtime (cmake)")
        _run([cmake, "--build", str(work), "--parallel", str(len(os.sched_getaffinity(0)))],
             f"building the {name} runtime")
        _run([cmake, "--install", str(work)], f"installing the {name} runtime")
        shutil.rmtree(work)
        for file_name, lib in libs.items():
            shutil.copy2(lib, stage.path / "lib" / file_name)
        (stage.path / "stamp").write_text(stamp)
        stage.commit()
