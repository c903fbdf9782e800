"""Device presets are data: every one is a valid TVM target; a planned one would be listed but refused."""

import pytest

from atrous import targets
from atrous.pipeline.errors import AtrousError


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


def test_a_cpu_preset_builds_for_another_cpu_with_that_cpus_database(host):
    """--mcpu: the same preset for another LLVM CPU, its own build name, the database of that CPU; it runs here
    only if this CPU has every instruction-set feature of the chosen one (tuning flags do not count)."""
    from atrous.targets.cpu_choice import features

    avx2 = targets.get_target("host", "znver3")
    assert avx2.target_dict()["mcpu"] == "znver3" and avx2.tuning_dir.parts[-2:] == ("host", "znver3")
    assert avx2.name == ("host" if host.target_dict()["mcpu"] == "znver3" else "host-znver3")
    avx512 = targets.get_target("host", "skylake-avx512")
    assert avx512.runs_here == ("avx512f" in features(host.target_dict()))
    assert "prefer-256-bit" not in features(avx512.target_dict()) and "avx512f" in features(avx512.target_dict())
    board = targets.get_target("rpi4", "cortex-a76")
    assert board.target_dict()["mtriple"] == "aarch64-linux-gnu" and board.tuning_dir.parts[-2:] == ("rpi4", "cortex-a76")
    with pytest.raises(AtrousError, match="LLVM knows no CPU 'znver9'.*znver3"):
        targets.get_target("host", "znver9")
    with pytest.raises(AtrousError, match="'h100' is a cuda target"):
        targets.get_target("h100", "znver3")
