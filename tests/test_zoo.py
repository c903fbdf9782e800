"""Every zoo model at its tiny preset, end to end on the host and cross-compiled for a Raspberry Pi 4 (run under
qemu-aarch64 with the aarch64 runtime): export, import, optimize, build, run, and compare with PyTorch (and ONNX
Runtime as a second reference) within the preset's explicit tolerance."""

import json

import pytest

from atrous.models import MODELS
from atrous.pipeline import source
from atrous.pipeline.cli import main
from atrous.pipeline.interface import CompileArgs, compile_model, verify_model
from atrous.pipeline.verify import report


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_model_compiles_and_matches_pytorch(name, exporter, host, build_root):
    """With each of PyTorch's ONNX exporters: the torch.export-based one (the default; it folds batch norms,
    writes opset 20 and reductions with axes counted from the end) and the TorchScript one."""
    artifact = compile_model(CompileArgs(source.from_zoo(name, "tiny"), host, build_root / exporter, tuned=False,
                                         exporter=exporter))
    assert artifact.meta().exporter == exporter and artifact.meta().exporter_fallback is None
    result = verify_model(artifact, host)
    print(report(result.checks, result.tolerance, result.notes))
    assert result.ok
    references = {c.reference for c in result.checks}
    assert references == {"pytorch", "onnxruntime"}, result.notes
    meta = artifact.meta()
    expected = set(MODELS[name].presets["tiny"].outputs)
    assert {c.name for c in result.checks} == {o.name for o in meta.outputs} == expected
    for check in result.checks:
        assert check.rel_l2 < host.tolerance.rel_l2 and check.max_abs < host.tolerance.max_abs, check


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_model_cross_compiles_for_rpi4_and_matches_pytorch_under_qemu(name, build_root):
    from atrous import targets

    rpi4 = targets.get_target("rpi4")
    artifact = compile_model(CompileArgs(source.from_zoo(name, "tiny"), rpi4, build_root))
    result = verify_model(artifact, rpi4)
    print(report(result.checks, result.tolerance, result.notes))
    assert result.ok and result.device == "emulator"
    for check in result.checks:
        assert check.rel_l2 < 1e-5, check


def test_list_models_shows_every_model_and_preset_with_sizes(capsys):
    assert main(["list", "models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["model"], r["preset"]) for r in rows} == {(m, p) for m in MODELS for p in ("tiny", "standard")}
    for row in rows:
        assert row["params_m"] > 0 and row["gflops"] > 0, row
    standard = {r["model"]: r for r in rows if r["preset"] == "standard"}
    assert standard["deeplabv3-resnet"]["gflops"] > standard["deeplabv3-mobilenet"]["gflops"]
    assert main(["list", "models"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in MODELS) and "GFLOPs" in text
