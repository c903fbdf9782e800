"""int8: QDQ graphs lowered to integer kernels, verified against ONNX Runtime on the same graph (in quantization
steps) and against the fp32 PyTorch original (SQNR), on the host's own build, an AVX2 build, and under qemu."""

import re

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from atrous import targets
from atrous.models import MODELS
from atrous.pipeline import source
from atrous.pipeline.errors import AtrousError, InputMismatchError
from atrous.pipeline.interface import CompileArgs, compile_model, verify_model
from atrous.pipeline.quantize import Calibration, is_qdq, quantize
from atrous.pipeline.verify import Criteria, argmax_agreement, compare_steps, report, sqnr_db

from dilation_cases import CASES, build

# single random convs quantize to ~35-45 dB; argmax over a random conv's channels is no class decision
SUITE = Criteria("int8", min_sqnr_db=25.0, min_argmax=0.0)


class Mixed(nn.Module):
    """What the int8 kernels must get right at once: a dilated conv whose output channels fill no block of 16, a
    strided depthwise conv, a grouped conv (TVM's legalization), a pointwise conv, a rate larger than the map
    (dead taps), a residual add left in float by the quantizer, odd feature-map sizes."""

    def __init__(self):
        super().__init__()
        self.dilated = nn.Conv2d(16, 24, 3, padding=2, dilation=2)
        self.depthwise = nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24)
        self.grouped = nn.Conv2d(24, 24, 3, padding=1, groups=3)
        self.pointwise = nn.Conv2d(24, 40, 1)
        self.wide = nn.Conv2d(40, 21, 3, padding=12, dilation=12)

    def forward(self, x):
        y = torch.relu(self.depthwise(torch.relu(self.dilated(x))))
        y = torch.relu(self.grouped(y)) + y
        return self.wide(torch.relu(self.pointwise(y)))


def _mixed():
    torch.manual_seed(0)
    return Mixed().eval()


def _source(name="int8-mixed"):
    inputs = {"x": np.random.default_rng(0).standard_normal((1, 16, 19, 23)).astype("float32")}
    return source.from_torch(name, _mixed, inputs)


def _checked(result):
    text = report(result.checks, result.tolerance, result.notes)
    print(text)
    assert result.ok, text
    return text


# native: this machine's CPU (int8 kernels with VNNI or pmaddwd); AVX2 (znver3): pmaddwd; rpi5 (Cortex-A76, under
# qemu): sdot; rpi4 (Cortex-A72, no dot product): by default the QDQ graph's float arithmetic, and with
# integer_convs="on" the int8 kernels' plain vectorised loop
BUILDS = [("host", None, "auto"), ("host", "znver3", "auto"), ("rpi5", None, "auto"), ("rpi4", None, "auto"),
          ("rpi4", None, "on")]


@pytest.mark.parametrize("board, mcpu, mode", BUILDS, ids=["native", "avx2", "rpi5", "rpi4", "rpi4-integer"])
def test_mixed_model_in_int8_matches_onnxruntime_within_a_step_and_pytorch_by_sqnr(board, mcpu, mode, build_root):
    from atrous.pipeline.optimize import OptimizeOptions
    from atrous.pipeline.schedules.int8_tiles import dot_of

    preset = targets.get_target(board, mcpu)
    artifact = compile_model(CompileArgs(_source(), preset, build_root / mode, precision="int8",
                                         options=OptimizeOptions(integer_convs=mode)))
    meta = artifact.meta()
    assert meta.precision == "int8" and is_qdq(onnx.load(str(artifact.qdq)))
    assert "8 seeded random input(s)" in meta.calibration
    assert not meta.rule_failures, meta.rule_failures
    names = " ".join(meta.kernel_flops)
    integer = mode == "on" or dot_of(preset.tvm_target()).name != "loop"
    # dilated, depthwise, pointwise, wide: int8 kernels where integer convs are taken, float ones elsewhere
    assert (names.count("conv2d_int8") >= 4) == integer, names
    result = verify_model(artifact, preset, criteria=SUITE)
    text = _checked(result)
    assert {c.reference for c in result.checks} == {"pytorch", "onnxruntime int8"}
    assert "SQNR" in text and ("bit-exact" in text or "within 1 step" in text)


def _lowered(artifact, board: str, mcpu: str | None):
    """The mixed model's QDQ graph lowered for a named CPU with integer convs on, before scheduling."""
    from atrous.pipeline.ingest import load_onnx, to_relax
    from atrous.pipeline.optimize import OptimizeOptions, lower

    target = targets.get_target(board, mcpu).tvm_target()
    return target, lower(to_relax(load_onnx(artifact.qdq), {"x": (1, 16, 19, 23)}), target,
                         OptimizeOptions(integer_convs="on"))


# dilated, pointwise, wide convs: Zen 4 and Ice Lake have AVX-512 VNNI; Zen 3 (AVX2) and Skylake-X (AVX-512
# without VNNI) pmaddwd; Cortex-A76 sdot; Cortex-A72 none (the plain loop)
VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"
DOTS = [("host", "znver4", VPDPBUSD), ("host", "icelake-server", VPDPBUSD),
        ("host", "znver3", "llvm.x86.avx2.pmadd.wd"),
        ("host", "skylake-avx512", "llvm.x86.avx512.pmaddw.d.512"), ("rpi5", None, "llvm.aarch64.neon.sdot"),
        ("rpi4", None, None)]


@pytest.mark.parametrize("board, mcpu, instruction", DOTS, ids=[d[1] or d[0] for d in DOTS])
def test_every_int8_kernel_gets_its_own_schedule_and_its_cpus_dot_product(board, mcpu, instruction, build_root):
    from atrous.pipeline.optimize import OptimizeOptions, apply_schedules
    from atrous.pipeline.schedules.int8_conv import DepthwiseInt8, Int8Conv

    artifact = compile_model(CompileArgs(_source(), targets.get_target("host"), build_root, precision="int8"))
    target, mod = _lowered(artifact, board, mcpu)
    kernels = {gv.name_hint: f for gv, f in mod.functions_items() if "conv2d_int8" in gv.name_hint}
    assert len(kernels) >= 4
    with target:
        for name, func in kernels.items():  # the rules take them (a rule that declines leaves them slow)
            rule = DepthwiseInt8() if "depthwise" in name else Int8Conv()
            assert rule.apply(func, target, False) is not None, name
    text = apply_schedules(mod, target, OptimizeOptions(integer_convs="on")).script()
    calls = set(re.findall(r'"(llvm\.(?:x86|aarch64)\.[\w.]+)"', text))
    if instruction is None:
        assert not calls, calls
    else:
        assert text.count(instruction) >= 3 and calls == {c for c in calls if c.startswith(instruction)}, calls


def test_integer_convs_off_computes_the_float_graph_within_a_step(build_root):
    """The float arithmetic of the QDQ graph as imported (integer_convs off) and the int8 kernels differ by
    rounding only: at most one step."""
    from atrous.pipeline.optimize import OptimizeOptions
    from atrous.pipeline.runner import CompiledModel

    host = targets.get_target("host")
    ints = compile_model(CompileArgs(_source(), host, build_root, precision="int8"))
    floats = compile_model(CompileArgs(_source("int8-mixed-float"), host, build_root, precision="int8",
                                       options=OptimizeOptions(integer_convs="off")))
    assert "conv2d_int8" not in " ".join(floats.meta().kernel_flops)
    inputs, _ = ints.load_golden()
    a = CompiledModel(ints).run(inputs)
    b = CompiledModel(floats).run(inputs)
    step = ints.meta().output_steps
    for name in a:
        check = compare_steps(name, a[name], b[name], step[name], SUITE)
        assert check.ok, check.line()


def test_qdq_file_from_onnxruntime_compiles_as_int8_and_is_compared_in_steps(tmp_path, build_root):
    src = _source()
    float_path = tmp_path / "mixed.onnx"
    from atrous.pipeline.export import write_onnx

    write_onnx(src, float_path)
    qdq = quantize(float_path, tmp_path / "mixed.qdq.onnx", Calibration(count=4), src.inputs)
    host = targets.get_target("host")
    artifact = compile_model(CompileArgs(source.from_onnx_file(qdq), host, build_root))  # no --precision given
    assert artifact.meta().precision == "int8" and artifact.root.name == "host"
    result = verify_model(artifact, host)
    _checked(result)
    assert [c.reference for c in result.checks] == ["onnxruntime"] and result.checks[0].steps


def test_calibration_directory_of_npy_samples_and_its_errors(tmp_path, build_root):
    samples = tmp_path / "samples"
    samples.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        np.save(samples / f"s{i}.npy", rng.standard_normal((16, 19, 23)).astype("float32"))  # no batch axis: ok
    host = targets.get_target("host")
    calibration = Calibration.parse(str(samples))
    artifact = compile_model(CompileArgs(_source(), host, build_root, precision="int8", calibration=calibration))
    assert artifact.meta().calibration.startswith("3 sample(s) from")
    _checked(verify_model(artifact, host, criteria=SUITE))
    np.save(samples / "bad.npy", np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InputMismatchError, match="bad.npy: input 'x' has shape \\[1, 3, 8, 8\\]"):
        compile_model(CompileArgs(_source("int8-bad"), host, build_root, precision="int8",
                                  calibration=Calibration.parse(str(samples))))
    with pytest.raises(AtrousError, match="not a directory of .npy/.npz samples, nor a sample count"):
        Calibration.parse(str(tmp_path / "missing"))


def test_int8_on_gpu_presets_is_refused_with_what_works_named(build_root):
    with pytest.raises(AtrousError, match="CPU presets only"):
        compile_model(CompileArgs(_source(), targets.get_target("jetson-orin"), build_root, precision="int8"))
    assert not (build_root / "int8-mixed" / "jetson-orin-int8").exists()


def test_reduced_precision_measures():
    e = np.random.default_rng(0).standard_normal((1, 4, 8, 8))
    assert sqnr_db(e, e) == float("inf")
    assert sqnr_db(e + 0.1 * e, e) == pytest.approx(20.0)  # noise a tenth of the signal: 20 dB
    flipped = e.copy()
    flipped[0, :, 0, 0] = -e[0, :, 0, 0]
    assert argmax_agreement(e, e) == 1.0 and argmax_agreement(e[:, :1], e[:, :1]) is None
    assert argmax_agreement(flipped, e) >= 63 / 64
    step = 0.5
    q = np.round(e / step) * step
    assert compare_steps("y", q, q, step, SUITE).steps == "bit-exact"
    off = q.copy()
    off.flat[3] += step
    one = compare_steps("y", off, q, step, SUITE)
    assert one.ok and "within 1 step(s)" in one.steps and "1 of 256" in one.steps
    off.flat[4] += 2 * step
    assert not compare_steps("y", off, q, step, SUITE).ok


def _case_source(case, prefix):
    inputs = {"x": np.random.default_rng(0).standard_normal(case.shape).astype("float32")}
    return source.from_torch(f"{prefix}-{case.name}", lambda: build(case), inputs)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_dilation_suite_in_int8_on_the_host(case, build_root):
    host = targets.get_target("host")
    artifact = compile_model(CompileArgs(_case_source(case, "int8"), host, build_root, precision="int8"))
    _checked(verify_model(artifact, host, criteria=SUITE))


# under qemu: a case of each kind the int8 kernels treat differently (dense dilated, strided, depthwise, grouped,
# dead taps, 1-D, ASPP); every case on the host above
ARM_CASES = ("stride2_rate3", "depthwise_stride2_rate4", "grouped_rate3", "rate_larger_than_map", "conv1d_rate4",
             "aspp_rates_6_12_18")


@pytest.mark.parametrize("board", ["rpi4", "rpi5"])
@pytest.mark.parametrize("name", ARM_CASES)
def test_dilation_cases_in_int8_under_qemu(board, name, build_root):
    case = next(c for c in CASES if c.name == name)
    preset = targets.get_target(board)
    artifact = compile_model(CompileArgs(_case_source(case, f"int8-{board}"), preset, build_root, precision="int8"))
    result = verify_model(artifact, preset, criteria=SUITE)
    _checked(result)
    assert result.device == "emulator"


def test_cli_runs_a_zoo_model_in_int8_with_its_report(tmp_path, capsys):
    from atrous.pipeline.cli import main

    argv = ["verify", "deeplabv3-mobilenet", "--preset", "tiny", "--precision", "int8", "--calibration", "4",
            "--build-dir", str(tmp_path), "--min-argmax", "90"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "host-int8" in out and "SQNR" in out and "argmax" in out and "onnxruntime int8" in out
    assert "int8 calibration: 4 seeded random input(s)" in out
    assert main([*argv[:-2], "--min-sqnr", "60"]) == 1  # no int8 build is that close to fp32: the criteria bite
    assert "MISMATCH" in capsys.readouterr().out


def test_pytorch_model_quantized_with_pt2e_compiles_as_int8(build_root):
    """torchao's PT2E flow (prepare_pt2e, calibrate, convert_pt2e) gives a module whose quantize/dequantize ops
    the dynamo exporter writes as a QDQ graph: compiled as int8 and compared in steps with the quantized module
    itself (signed int8 activations: the kernels' shift into uint8)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16, 19, 23)).astype("float32"))

    def quantized():
        module = torch.export.export(_mixed(), (x,)).module()
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(module, quantizer)
        for seed in range(4):
            prepared(torch.randn(1, 16, 19, 23, generator=torch.Generator().manual_seed(seed)))
        return convert_pt2e(prepared)

    host = targets.get_target("host")
    artifact = compile_model(CompileArgs(source.from_torch("int8-pt2e", quantized, {"x": x.numpy()}), host,
                                         build_root))
    meta = artifact.meta()
    assert meta.precision == "int8" and meta.reference == "pytorch"
    assert "conv2d_int8" in " ".join(meta.kernel_flops)  # this machine is x86: VNNI or pmaddwd
    result = verify_model(artifact, host, criteria=SUITE)
    _checked(result)
    assert all(c.steps for c in result.checks if c.reference == "pytorch")


def test_int8_builds_without_vnni_quantize_7_bit_weights_for_vpmaddubsw(build_root):
    """On x86 without VNNI the quantizer keeps weights to 7 bits (ONNX Runtime's reduce_range), so vpmaddubsw's
    pairs of byte products cannot saturate: the build uses it, and stays exact (ONNX Runtime within a step)."""
    from atrous.pipeline.optimize import OptimizeOptions, apply_schedules

    preset = targets.get_target("host", "znver3")
    artifact = compile_model(CompileArgs(_source("int8-7bit"), preset, build_root, precision="int8"))
    model = onnx.load(str(artifact.qdq))
    weights = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
    assert "vpmaddubsw" in artifact.meta().int8_kernels
    target, mod = _lowered(artifact, "host", "znver3")
    text = apply_schedules(mod, target, OptimizeOptions(integer_convs="on")).script()
    assert text.count("llvm.x86.avx2.pmadd.ub.sw") >= 3
    _checked(verify_model(artifact, preset, criteria=SUITE))


@pytest.mark.parametrize("name", MODELS)
def test_every_int8_conv_of_every_zoo_model_is_taken_by_its_rule_on_each_cpu(name, build_root):
    """A rule that declines leaves a kernel to the generic rules, many times slower: no int8 conv of any zoo model
    may be declined, for AVX-512 VNNI, AVX2 and the AArch64 dot product."""
    from atrous.pipeline.ingest import load_onnx, to_relax
    from atrous.pipeline.optimize import OptimizeOptions, lower
    from atrous.pipeline.schedules.int8_conv import DepthwiseInt8, Int8Conv

    src = source.from_zoo(name, "tiny")
    artifact = compile_model(CompileArgs(src, targets.get_target("host"), build_root, precision="int8", tuned=False))
    shapes = {n: v.shape for n, v in src.inputs.items()}
    for board, mcpu in (("host", "znver4"), ("host", "znver3"), ("rpi5", None)):
        target = targets.get_target(board, mcpu).tvm_target()
        mod = lower(to_relax(load_onnx(artifact.qdq), shapes), target, OptimizeOptions())
        with target:
            declined = [gv.name_hint for gv, func in mod.functions_items() if "conv2d_int8" in gv.name_hint
                        and (DepthwiseInt8() if "depthwise" in gv.name_hint else Int8Conv()).apply(
                            func, target, False) is None]
        assert not declined, (board, mcpu, declined)
