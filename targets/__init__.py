"""Device presets, as data. ``get_target(name)`` looks one up; ``TARGETS`` lists them all."""

from __future__ import annotations

if __name__ != "atrous.targets":  # one copy of each module: the installed package is atrous.targets
    raise ImportError(f"'{__name__}' is atrous.targets: import atrous.targets (python -m atrous.targets.MODULE)")

from atrous.pipeline.errors import AtrousError, UnknownNameError

from atrous.targets import arm, cuda, host, vulkan
from atrous.targets.cpu_choice import for_cpu
from atrous.targets.preset import DevicePreset, Tolerance

TARGETS: dict[str, DevicePreset] = {}


def register(preset: DevicePreset) -> DevicePreset:
    if preset.name in TARGETS:
        raise ValueError(f"target preset '{preset.name}' is already registered")
    TARGETS[preset.name] = preset
    return preset


def get_target(name: str, mcpu: str | None = None) -> DevicePreset:
    """The preset called ``name``; unknown names and presets that are not implemented yet are refused. ``mcpu``:
    the same device family built for another CPU (``for_cpu``)."""
    if name not in TARGETS:
        raise UnknownNameError("target", name, TARGETS)
    preset = TARGETS[name]
    if preset.status != "works":
        raise AtrousError(f"target '{name}' is planned but not implemented yet; working targets: "
                          + ", ".join(n for n, p in TARGETS.items() if p.status == "works"))
    return preset if mcpu is None else for_cpu(preset, mcpu)


for _family in (host, arm, cuda, vulkan):
    for _preset in _family.PRESETS:
        register(_preset)

__all__ = ["TARGETS", "DevicePreset", "Tolerance", "for_cpu", "get_target", "register"]
