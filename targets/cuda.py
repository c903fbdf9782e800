"""NVIDIA GPUs through TVM's CUDA codegen: Jetson modules (aarch64 host code) and x86_64 desktop/datacenter cards.

Device code is compiled by NVRTC from the pinned ``nvidia-cuda-nvrtc-cu12`` wheel (pipeline/devices/cuda.py) into a
cubin for the preset's ``sm_XX`` and embedded in ``model.so``: no CUDA toolkit is needed to compile, and none but
the driver on the device (the bundle carries ``libcudart``). Nothing here runs on this machine without a GPU.

The limits are the devices' own (CUDA occupancy tables): threads per block, shared memory a block may use
without opting in to the larger carve-out, registers per block.
"""

from __future__ import annotations

from atrous.targets.preset import GPU_TOLERANCE, DevicePreset

X86_HOST = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
JETSON_HOST = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78ae"}


def _limits(sm: str) -> dict:
    return {"max_num_threads": 1024, "max_threads_per_block": 1024, "thread_warp_size": 32,
            "max_shared_memory_per_block": 49152, "registers_per_block": 65536, "arch": sm}


def _gpu(name: str, summary: str, sm: str, host: dict, arch: str, **extra) -> DevicePreset:
    return DevicePreset(name, summary, "cuda", {"kind": "cuda", **_limits(sm)}, runtime_arch=arch, host=host,
                        runs_here=False, tolerance=GPU_TOLERANCE, **extra)


JETSON = dict(cross_compiler="aarch64-linux-gnu-g++", toolchain_packages=("g++-aarch64-linux-gnu",))

PRESETS = (
    _gpu("jetson-orin", "Jetson Orin GPU (Ampere, sm_87)", "sm_87", JETSON_HOST, "aarch64", **JETSON),
    _gpu("jetson-xavier", "Jetson Xavier GPU (Volta, sm_72)", "sm_72",
         {**JETSON_HOST, "mcpu": "carmel"}, "aarch64", **JETSON),
    _gpu("rtx3090", "GeForce RTX 3090 (Ampere, sm_86)", "sm_86", X86_HOST, "x86_64"),
    _gpu("rtx4090", "GeForce RTX 4090 (Ada, sm_89)", "sm_89", X86_HOST, "x86_64"),
    _gpu("a100", "A100 (Ampere, sm_80)", "sm_80", X86_HOST, "x86_64"),
    _gpu("h100", "H100 / H200 (Hopper, sm_90)", "sm_90", X86_HOST, "x86_64"),
)
