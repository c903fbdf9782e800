"""Models no one here wrote: a schedule rule never fails a compile, and the shapes that broke one get the fast
schedule."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atrous import targets
from atrous.pipeline import source
from atrous.pipeline.interface import CompileArgs, compile_model, require_ok, verify_model


class SqueezeExcite(nn.Module):
    """MobileNetV3's gate: global pool -> 1x1 conv -> ReLU -> 1x1 conv -> hardsigmoid -> times the block's input."""

    def __init__(self, channels):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))


class GatedBlock(nn.Module):
    """Expansion, dilated depthwise conv with hardswish, squeeze-excitation, projection, residual."""

    def __init__(self, channels=16, expanded=48, dilation=2):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(channels, expanded, 1, bias=False), nn.BatchNorm2d(expanded),
                                    nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(expanded, expanded, 3, padding=dilation, dilation=dilation,
                                                 groups=expanded, bias=False), nn.BatchNorm2d(expanded), nn.Hardswish())
        self.gate = SqueezeExcite(expanded)
        self.project = nn.Sequential(nn.Conv2d(expanded, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.project(self.gate(self.depthwise(self.expand(x))))


def _gated_source():
    torch.manual_seed(0)
    module = GatedBlock().eval()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics that do something
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    inputs = {"x": np.random.default_rng(0).standard_normal((1, 16, 17, 17)).astype("float32")}
    return source.from_torch("gated-block", lambda: module, inputs)


def test_squeeze_excitation_gates_compile_with_the_fast_schedules_and_match_pytorch(host, build_root):
    """The gate's multiply is fused into the kernel that computes the gate (a 1x1 map) and broadcast over the
    block's input; the conv rules used to raise an InternalError inlining it (issue: foreign models)."""
    artifact = compile_model(CompileArgs(_gated_source(), host, build_root, tuned=False, force=True))
    assert artifact.meta().rule_failures == ()
    result = require_ok(verify_model(artifact, host))
    assert result.checks and all(c.ok for c in result.checks)


def test_a_rule_that_raises_declines_and_the_report_names_the_kernel(host, build_root, monkeypatch):
    """Any exception from a rule (here a bare RuntimeError before the real rules) is one line in the report; the
    next rule schedules the kernel and the model still matches PyTorch."""
    from atrous.pipeline import optimize, schedules
    from tvm.s_tir.dlight.base import ScheduleRule

    class Broken(ScheduleRule):
        def apply(self, func, target, tunable):
            if any(b.name_hint.startswith("conv") for b in _blocks(func)):
                raise RuntimeError("first line\nCheck failed: broken on purpose")
            return None

    rules = schedules.default_rules
    monkeypatch.setattr(schedules, "default_rules", lambda target, options=None: (Broken(), *rules(target, options)))
    assert optimize  # the pass list imports default_rules from the package at call time
    artifact = compile_model(CompileArgs(_gated_source(), host, build_root / "broken", tuned=False, force=True))
    failures = artifact.meta().rule_failures
    assert failures and all("Broken failed (RuntimeError: Check failed: broken on purpose); scheduled by" in f
                            for f in failures), failures
    require_ok(verify_model(artifact, host))


def _blocks(func):
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    return [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]


@pytest.mark.parametrize("rule_error", ["ScheduleError", "InternalError"])
def test_apply_first_skips_a_raising_rule(rule_error):
    from tvm import s_tir, te

    from atrous.pipeline.schedules.cpu import Elementwise
    from atrous.pipeline.schedules.guard import apply_first, collect_failures

    a = te.placeholder((4, 8), name="a")
    func = te.create_prim_func([a, te.compute((4, 8), lambda i, j: a[i, j] * 2, name="b")])

    class Raises:
        def apply(self, func, target, tunable):
            if rule_error == "ScheduleError":  # the way rules decline: not a failure
                s_tir.Schedule(func).get_sblock("missing")
            raise targets_error()

    def targets_error():
        import tvm

        return tvm.error.InternalError("Check failed: (node.defined()) is false")

    with collect_failures() as failures:
        sch = apply_first(func, targets.get_target("host").tvm_target(), [Raises(), Elementwise()], "k")
    assert sch is not None and "T.parallel" in sch.mod["main"].script()
    assert [f.line() for f in failures] == ([] if rule_error == "ScheduleError" else [
        "k: Raises failed (InternalError: Check failed: (node.defined()) is false); scheduled by Elementwise"])


def _old_graph(path, opset: int, nodes, weights: dict, shape=(1, 3, 8, 8), out_shape=(1, 4, 8, 8)):
    """An IR-version-3 ONNX file as the classic exporters wrote them: every initializer listed as a graph input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(v.shape)) for n, v in weights.items()]
    graph = helper.make_graph(nodes, "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                   list(out_shape))],
                              [numpy_helper.from_array(v, n) for n, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    onnx.save(model, str(path))
    return path


def _conv_relu(opset: int, path):
    from onnx import helper

    weights = {"w": np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype("float32"),
               "b": np.linspace(-1, 1, 4).astype("float32")}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return _old_graph(path, opset, nodes, weights)


def test_an_ir3_file_compiles_to_a_model_of_its_data_inputs_only(host, build_root, tmp_path):
    """Before IR 4 initializers were graph inputs too; TVM made each an argument of main (ResNet-50: 206)."""
    path = _conv_relu(9, tmp_path / "ir3.onnx")
    artifact = compile_model(CompileArgs(source.from_onnx_file(path), host, build_root, tuned=False))
    assert [s.name for s in artifact.meta().inputs] == ["x"]
    require_ok(verify_model(artifact, host))


def test_an_opset_onnxruntime_refuses_is_converted_for_the_reference(host, build_root, tmp_path):
    """Opset 1's Relu has no ONNX Runtime kernel: the reference runs the graph converted to opset 13, and says so."""
    path = _conv_relu(1, tmp_path / "opset1.onnx")
    artifact = compile_model(CompileArgs(source.from_onnx_file(path), host, build_root, tuned=False))
    assert artifact.meta().reference == "onnxruntime (opset 1 -> 13)"
    result = require_ok(verify_model(artifact, host))
    assert any("converted to opset 13" in note for note in result.notes)


def test_without_any_reference_compile_works_and_verify_says_why(host, build_root, tmp_path, monkeypatch):
    from atrous.pipeline import interface
    from atrous.pipeline.errors import VerificationError

    def refuse(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : no kernel for this opset")

    monkeypatch.setattr(interface, "onnxruntime_outputs", refuse)
    path = _conv_relu(9, tmp_path / "noref.onnx")
    artifact = compile_model(CompileArgs(source.from_onnx_file(path), host, build_root / "noref", tuned=False))
    meta = artifact.meta()
    assert meta.reference == "none" and "NOT_IMPLEMENTED" in meta.reference_note and artifact.library.is_file()
    assert [(o.name, o.shape, o.dtype) for o in meta.outputs] == [("y", (1, 4, 8, 8), "float32")]
    with pytest.raises(VerificationError, match="nothing to compare with: ONNX Runtime refused the graph"):
        verify_model(artifact, host)


def test_a_per_channel_prelu_slope_of_an_old_opset_compiles(host, build_root, tmp_path):
    """PRelu-6 applied a 1-D slope per channel (from opset 7 it broadcasts from the last axis); TVM's importer
    stopped on it with a bare AssertionError. The compiled model applies it per channel; ONNX Runtime has no
    PRelu-6 kernel and rejects the converted graph, so verify has no reference and says so."""
    from onnx import helper

    from atrous.pipeline.errors import VerificationError
    from atrous.pipeline.runner import CompiledModel

    slope = np.linspace(0.1, 0.6, 6).astype("float32")
    path = _old_graph(tmp_path / "prelu6.onnx", 6, [helper.make_node("PRelu", ["x", "slope"], ["y"])],
                      {"slope": slope}, shape=(1, 6, 5, 8), out_shape=(1, 6, 5, 8))
    src = source.from_onnx_file(path)
    artifact = compile_model(CompileArgs(src, host, build_root / "prelu", tuned=False))
    x = src.inputs["x"]
    expected = np.where(x > 0, x, x * slope.reshape(6, 1, 1))
    np.testing.assert_allclose(CompiledModel(artifact).run({"x": x})["y"], expected, rtol=1e-6)
    with pytest.raises(VerificationError, match="nothing to compare with"):
        verify_model(artifact, host)


def test_an_exception_inside_the_compiler_is_one_line_naming_its_stage(host, build_root, monkeypatch):
    from atrous.pipeline import interface
    from atrous.pipeline.errors import CompilerBugError

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(interface, "lower", broken)
    with pytest.raises(CompilerBugError, match=r"internal compiler error while optimizing the graph "
                                               r"\(IndexError: list index out of range\); please report it"):
        compile_model(CompileArgs(_gated_source(), host, build_root / "bug", tuned=False, force=True))


@pytest.mark.parametrize("debug", ["", "1"])
def test_the_cli_prints_a_compiler_bug_in_one_line_and_its_traceback_on_request(debug, tmp_path, monkeypatch,
                                                                                capsys):
    from atrous.pipeline import interface
    from atrous.pipeline.cli import main

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(interface, "lower", broken)
    monkeypatch.setenv("ATROUS_DEBUG", debug)
    assert main(["compile", "deeplabv3-mobilenet", "--preset", "tiny", "--build-dir", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("atrous: error: internal compiler error while optimizing")
    assert ("Traceback (most recent call last)" in err) == bool(debug), err
    assert ("in broken" in err) == bool(debug)


@pytest.mark.parametrize("kind", ["float16_edges", "float16_throughout", "int64_ids"])
def test_inputs_and_outputs_of_other_dtypes(kind, host, build_root, tmp_path):
    """float16 at the graph's edges (cast inside), a float16 graph throughout (float16 outputs are compared within
    what float16 resolves, and the report says so), int64 token ids into an embedding gather."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype("float32")
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    if kind == "float16_edges":
        nodes = [helper.make_node("Cast", ["x"], ["xf"], to=f32), helper.make_node("Conv", ["xf", "w"], ["c"], **conv),
                 helper.make_node("Cast", ["c"], ["y"], to=f16)]
        io, weights = ((f16, [1, 3, 8, 8]), (f16, [1, 4, 8, 8])), [numpy_helper.from_array(w, "w")]
    elif kind == "float16_throughout":
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], **conv), helper.make_node("Relu", ["c"], ["y"])]
        io, weights = ((f16, [1, 3, 8, 8]), (f16, [1, 4, 8, 8])), [numpy_helper.from_array(w.astype("float16"), "w")]
    else:
        table = np.random.default_rng(1).standard_normal((10, 4)).astype("float32")
        nodes = [helper.make_node("Gather", ["w", "x"], ["e"], axis=0),
                 helper.make_node("Transpose", ["e"], ["t"], perm=[0, 2, 1]), helper.make_node("Relu", ["t"], ["y"])]
        io, weights = ((TensorProto.INT64, [1, 12]), (f32, [1, 4, 12])), [numpy_helper.from_array(table, "w")]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", *io[0])],
                              [helper.make_tensor_value_info("y", *io[1])], weights)
    path = tmp_path / f"{kind}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    src = source.from_onnx_file(path)
    if kind == "int64_ids":
        src.inputs["x"] = np.random.default_rng(2).integers(0, 10, (1, 12))
    artifact = compile_model(CompileArgs(src, host, build_root / kind, tuned=False))
    assert artifact.meta().inputs[0].dtype == {"int64_ids": "int64"}.get(kind, "float16")
    result = require_ok(verify_model(artifact, host))
    assert ("float16 output" in result.checks[0].loosened) == kind.startswith("float16")
