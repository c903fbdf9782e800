"""A device preset: everything the pipeline needs to know about one device, as data.

Adding a board is adding a ``DevicePreset(...)`` to the family file and registering it. Nothing in the pipeline
branches on preset names: it reads these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TUNING_ROOT = Path(__file__).resolve().parent / "tuning"


@dataclass(frozen=True)
class Tolerance:
    """Explicit numerical tolerance against the reference.

    ``rel_l2``: ||actual - expected||_2 / ||expected||_2.  ``max_abs``: max |actual - expected| divided by
    max(1, max |expected|), so it is scale-aware but never looser than absolute for small outputs.
    """

    rel_l2: float = 1e-5
    max_abs: float = 1e-4


# GPU reductions run in a different order than the CPU reference (and fast-math exp/tanh): looser than CPU.
GPU_TOLERANCE = Tolerance(rel_l2=1e-4, max_abs=1e-3)


@dataclass(frozen=True)
class DevicePreset:
    """One device the compiler targets.

    ``target`` is a TVM target dict, or a callable that returns one (for presets that depend on the build
    machine, like ``host``); ``host`` is the host-side target dict for GPU presets. ``cross_compiler`` is the C++
    compiler that links the model library (None: the system ``c++``); ``toolchain_packages`` names the Debian
    packages that provide it. ``runs_here`` says whether artifacts run on this machine without an emulator or
    device; ``emulator`` is the command prefix that runs the device's binaries here (qemu), with the Debian
    packages that provide it in ``emulator_packages``. ``status`` is "works" or "planned" (listed, but refused until its issue lands).
    """

    name: str
    summary: str
    family: str
    target: dict | Callable[[], dict]
    runtime_arch: str
    threads: int | None = None
    host: dict | None = None
    cross_compiler: str | None = None
    toolchain_packages: tuple[str, ...] = ()
    runs_here: bool = True
    emulator: tuple[str, ...] = ()
    emulator_packages: tuple[str, ...] = ()
    tolerance: Tolerance = field(default_factory=Tolerance)
    status: str = "works"
    tuning_name: str = ""  # the device whose databases it shares ("" : its own name); see targets/cpu_choice.py

    def __post_init__(self):
        if self.status not in ("works", "planned"):
            raise ValueError(f"preset {self.name}: status must be 'works' or 'planned', not {self.status!r}")
        if not self.name or not self.name.replace("-", "").isalnum():
            raise ValueError(f"preset name {self.name!r} must be alphanumeric with dashes")

    def target_dict(self) -> dict:
        """The TVM target as a plain dict (calls the factory for machine-dependent presets)."""
        spec = self.target() if callable(self.target) else dict(self.target)
        if self.threads and "num-cores" not in spec and spec.get("kind") == "llvm":
            spec["num-cores"] = self.threads
        return spec

    def tvm_target(self):
        """The ``tvm.target.Target`` (with host, if any)."""
        import tvm

        if self.host is None:
            return tvm.target.Target(self.target_dict())
        return tvm.target.Target(self.target_dict(), host=self.host)

    @property
    def tuning_dir(self) -> Path:
        """Where this device's reviewed tuning database lives (``targets/tuning/<name>/<cpu>``)."""
        spec = self.target_dict()
        device = self.tuning_name or self.name
        return TUNING_ROOT / device / str(spec.get("mcpu") or spec.get("arch") or spec.get("kind"))

    def replace(self, **changes) -> "DevicePreset":
        return dataclasses.replace(self, **changes)
