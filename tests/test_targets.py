"""Device presets are data: every one is a valid TVM target; a planned one would be listed but refused."""

import pytest

import targets
from pipeline.errors import AtrousError


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_every_preset_is_a_valid_tvm_target(name):
    preset = targets.TARGETS[name]
    target = preset.tvm_target()
    assert target.kind.name == preset.target_dict()["kind"]
    if preset.host is not None:
        assert target.host is not None and target.host.kind.name == "llvm"
    if preset.runtime_arch == "aarch64":
        triple = (preset.target_dict() if preset.family == "arm" else preset.host)["mtriple"]
        assert triple.startswith("aarch64")
    if preset.cross_compiler:
        assert preset.toolchain_packages, "a cross compiler needs the Debian package that provides it"


def test_planned_presets_are_refused_with_the_working_ones_named(monkeypatch):
    # every shipped preset works now; a board added as data before its backend lands is refused by name
    assert all(p.status == "works" for p in targets.TARGETS.values())
    monkeypatch.setitem(targets.TARGETS, "future-board", targets.TARGETS["host"].replace(name="future-board",
                                                                                          status="planned"))
    with pytest.raises(AtrousError, match="planned but not implemented yet; working targets: host, rpi4"):
        targets.get_target("future-board")


def test_host_target_names_its_cpu_explicitly(host):
    spec = host.target_dict()
    assert spec["mcpu"] not in ("", "generic", "native") and spec["num-cores"] >= 1
    assert host.tuning_dir.name == spec["mcpu"]
