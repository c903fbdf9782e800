"""ARM CPU boards (aarch64 Linux): cross-compiled here with aarch64-linux-gnu-g++, run under qemu or on the board.

The sysroot of Debian's cross toolchain (/usr/aarch64-linux-gnu) is what qemu-user loads the board's C and C++
libraries from, so the emulator needs the toolchain package as well as qemu.
"""

from __future__ import annotations

from atrous.targets.preset import DevicePreset

CROSS = dict(runtime_arch="aarch64", cross_compiler="aarch64-linux-gnu-g++",
             toolchain_packages=("g++-aarch64-linux-gnu",), runs_here=False,
             emulator=("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"),
             emulator_packages=("qemu-user", "g++-aarch64-linux-gnu"))


def _cpu(mcpu: str, cores: int, mattr: tuple[str, ...] = ("+neon",)) -> dict:
    return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu, "mattr": list(mattr), "num-cores": cores}


PRESETS = (
    DevicePreset("rpi4", "Raspberry Pi 4 (4x Cortex-A72)", "arm", _cpu("cortex-a72", 4), threads=4, **CROSS),
    DevicePreset("rpi5", "Raspberry Pi 5 (4x Cortex-A76)", "arm", _cpu("cortex-a76", 4, ("+neon", "+dotprod")),
                 threads=4, **CROSS),
    DevicePreset("jetson-orin-cpu", "Jetson Orin CPU (Cortex-A78AE, 8 cores on Orin NX)", "arm",
                 _cpu("cortex-a78ae", 8, ("+neon", "+dotprod")), threads=8, **CROSS),
    DevicePreset("aarch64", "generic aarch64 with NEON", "arm", _cpu("generic", 4), threads=4, **CROSS),
)
