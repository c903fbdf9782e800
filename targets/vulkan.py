"""Vulkan GPUs through the project's own Vulkan backend (pipeline/devices/vulkan/: TIR -> GLSL -> SPIR-V; the runtime
in runtime/src/vulkan/). The limits are what the devices report as Vulkan limits (maxComputeWorkGroupInvocations,
maxComputeSharedMemorySize) and features (shaderInt64; without it 64-bit indices are narrowed or refused;
shaderFloat16 and storageBuffer16BitAccess, which fp16 builds need: ``FLOAT16``).

``vulkan-desktop`` runs here on whatever Vulkan device the machine has (Mesa's lavapipe, a CPU implementation, in
CI); the phone and board GPUs are cross-compiled for their aarch64 hosts and run through ``--device ssh://``.
"""

from __future__ import annotations

from atrous.targets.preset import GPU_TOLERANCE, DevicePreset


def _vk(name: str, summary: str, threads: int, shared: int, host: dict, arch: str, runs_here: bool,
        extra: dict, **features) -> DevicePreset:
    target = {"kind": "vulkan", "max_num_threads": threads, "max_threads_per_block": threads,
              "max_shared_memory_per_block": shared, "thread_warp_size": 1, **features}
    return DevicePreset(name, summary, "vulkan", target, runtime_arch=arch, host=host, runs_here=runs_here,
                        tolerance=GPU_TOLERANCE, **extra)


# float16 arithmetic and float16 storage buffers (--precision fp16): lavapipe reports both (device_info()). Mali-G610
# and Adreno 740 have float16 ALUs and are expected to report both; unchecked, as no board was available. A device
# without them refuses the kernels at load time, naming the missing feature (runtime/src/vulkan/vulkan_module.cc).
FLOAT16 = dict(supports_float16=True, supports_16bit_buffer=True)
AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}
CROSS = dict(cross_compiler="aarch64-linux-gnu-g++", toolchain_packages=("g++-aarch64-linux-gnu",))

PRESETS = (
    _vk("mali-g610", "Arm Mali-G610 (RK3588 boards)", 1024, 32768, AARCH64, "aarch64", False, CROSS,
        supports_int64=True, **FLOAT16),
    _vk("adreno-740", "Qualcomm Adreno 740", 1024, 32768, AARCH64, "aarch64", False, CROSS, **FLOAT16),
    _vk("vulkan-desktop", "any desktop Vulkan 1.1 device on this machine (lavapipe in CI)", 256, 32768,
        {"kind": "llvm"}, "x86_64", True, {}, supports_int64=True, **FLOAT16),
)
