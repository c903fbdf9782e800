"""Vulkan GPUs through the project's own Vulkan backend (SPIR-V compute shaders).

Planned: listed so the format is fixed, refused by ``compile`` until the Vulkan issue lands. The limits are the
devices' reported Vulkan limits (maxComputeWorkGroupInvocations, maxComputeSharedMemorySize).
"""

from __future__ import annotations

from .preset import DevicePreset


def _vk(name: str, summary: str, threads: int, shared: int, host: dict, arch: str, **features) -> DevicePreset:
    target = {"kind": "vulkan", "max_num_threads": threads, "max_shared_memory_per_block": shared,
              "thread_warp_size": 1, **features}
    return DevicePreset(name, summary, "vulkan", target, runtime_arch=arch, host=host, runs_here=False,
                        status="planned")


AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}

PRESETS = (
    _vk("mali-g610", "Arm Mali-G610 (RK3588 boards)", 1024, 32768, AARCH64, "aarch64",
        supports_float16=True, supports_int64=True),
    _vk("adreno-740", "Qualcomm Adreno 740", 1024, 32768, AARCH64, "aarch64", supports_float16=True),
    _vk("vulkan-desktop", "any desktop Vulkan 1.2 device (lavapipe in CI)", 256, 32768,
        {"kind": "llvm"}, "x86_64", supports_int64=True),
)
