"""NVIDIA GPUs through TVM's CUDA codegen: Jetson modules (aarch64 host code) and x86_64 desktop/datacenter cards.

Planned: listed so the format is fixed, refused by ``compile`` until the CUDA issue lands.
"""

from __future__ import annotations

from .preset import DevicePreset

X86_HOST = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
JETSON_HOST = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78ae"}


def _gpu(name: str, summary: str, sm: str, host: dict, arch: str, **extra) -> DevicePreset:
    return DevicePreset(name, summary, "cuda", {"kind": "cuda", "arch": sm}, runtime_arch=arch, host=host,
                        runs_here=False, status="planned", **extra)


JETSON = dict(cross_compiler="aarch64-linux-gnu-g++", toolchain_packages=("g++-aarch64-linux-gnu",))

PRESETS = (
    _gpu("jetson-orin", "Jetson Orin GPU (Ampere, sm_87)", "sm_87", JETSON_HOST, "aarch64", **JETSON),
    _gpu("jetson-xavier", "Jetson Xavier GPU (Volta, sm_72)", "sm_72",
         {**JETSON_HOST, "mcpu": "carmel"}, "aarch64", **JETSON),
    _gpu("rtx3090", "GeForce RTX 3090 (Ampere, sm_86)", "sm_86", X86_HOST, "x86_64"),
    _gpu("rtx4090", "GeForce RTX 4090 (Ada, sm_89)", "sm_89", X86_HOST, "x86_64"),
    _gpu("a100", "A100 (Ampere, sm_80)", "sm_80", X86_HOST, "x86_64"),
    _gpu("h100", "H100 (Hopper, sm_90)", "sm_90", X86_HOST, "x86_64"),
)
