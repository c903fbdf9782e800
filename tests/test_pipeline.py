"""Pipeline behaviour: ONNX files from outside the zoo, bad input, atomic artifacts, caching, the verifier."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from atrous import targets
from atrous.pipeline import errors, source
from atrous.pipeline.artifact import artifact_dir
from atrous.pipeline.cli import main
from atrous.pipeline.interface import CompileArgs, compile_model, require_ok, verify_model
from atrous.pipeline.runner import CompiledModel
from atrous.pipeline.verify import compare
from atrous.targets import Tolerance


class OutsideModel(torch.nn.Module):
    """Not a zoo model: two inputs, a dilated conv, a pooled MLP head, two outputs."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=2, dilation=2)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, image, bias):
        features = torch.relu(self.conv(image))
        return features, self.fc(features.mean(dim=(2, 3))) + bias


@pytest.fixture(scope="module")
def outside_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "outside.onnx"
    args = (torch.randn(1, 3, 16, 16), torch.randn(1, 5))
    torch.onnx.export(OutsideModel().eval(), args, str(path), dynamo=False, opset_version=17,
                      input_names=["image", "bias"], output_names=["features", "logits"],
                      dynamic_axes={"image": {0: "batch"}, "bias": {0: "batch"}})
    return path


def _graph(nodes, inputs, outputs, path):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    onnx.save(model, str(path))
    return path


def test_onnx_file_outside_the_zoo_compiles_and_verifies(outside_onnx, tmp_path, capsys):
    code = main(["verify", str(outside_onnx), "--input-shape", "image:1x3x16x16,bias:1x5",
                 "--build-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "features" in out and "logits" in out and "vs onnxruntime" in out
    meta = (tmp_path / "outside" / "host" / "meta.json").read_text()
    assert '"reference": "onnxruntime"' in meta


def test_an_onnx_file_with_its_weights_beside_it_compiles(outside_onnx, tmp_path, capsys):
    """External data (the dynamo exporter's default, and any model over 2 GB): the weights are read from beside
    the file and the artifact keeps a self-contained copy."""
    model = onnx.load(str(outside_onnx))
    split = tmp_path / "split"
    split.mkdir()
    onnx.save(model, str(split / "outside.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="outside.onnx.data", size_threshold=0)
    assert (split / "outside.onnx.data").stat().st_size > 1000
    assert main(["verify", str(split / "outside.onnx"), "--input-shape", "image:1x3x16x16,bias:1x5",
                 "--build-dir", str(tmp_path / "build")]) == 0, capsys.readouterr().err
    copy = tmp_path / "build" / "outside" / "host" / "model.onnx"
    assert not list(copy.parent.glob("*.data")) and onnx.load(str(copy), load_external_data=False).graph.initializer


def test_dynamic_input_without_shape_names_the_flag(outside_onnx, tmp_path):
    with pytest.raises(errors.InputMismatchError, match=r"--input-shape image:1x3x16x16"):
        source.from_onnx_file(outside_onnx)


def test_shape_that_contradicts_the_model_is_refused(outside_onnx):
    with pytest.raises(errors.InputMismatchError, match="does not fit"):
        source.from_onnx_file(outside_onnx, {"image": (1, 3, 16), "bias": (1, 5)})


def test_unknown_model_lists_valid_names(capsys):
    assert main(["compile", "deeplab-v9", "--target", "host"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'deeplab-v9'" in err and "deeplabv3-resnet" in err and "Traceback" not in err


def test_unknown_target_lists_valid_names(capsys):
    assert main(["compile", "linknet", "--target", "pi9"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'pi9'" in err and "host" in err


def test_unknown_preset_lists_valid_names():
    with pytest.raises(errors.UnknownNameError, match="tiny"):
        source.from_zoo("linknet", "huge")


def test_corrupt_onnx_is_refused_and_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf")
    assert main(["compile", str(bad), "--build-dir", str(tmp_path / "out")]) == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "out" / "broken").exists()


def test_every_unsupported_op_is_named_at_once(tmp_path, host):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Warp", ["a"], ["b"], domain="custom"),
             helper.make_node("Frobnicate", ["b"], ["y"], domain="custom")]
    path = _graph(nodes, [x], [y], tmp_path / "weird.onnx")
    src = source.from_onnx_file(path)
    with pytest.raises(errors.UnsupportedOpError) as info:
        compile_model(CompileArgs(src, host, tmp_path / "out"))
    assert info.value.ops == ["custom.Frobnicate", "custom.Warp"]
    assert not (tmp_path / "out" / "weird").exists()


def test_missing_cross_compiler_names_the_package(tmp_path, host):
    preset = host.replace(cross_compiler="aarch64-nowhere-g++", toolchain_packages=("g++-aarch64-linux-gnu",))
    src = source.from_torch("tc", lambda: torch.nn.ReLU(), {"x": np.ones((1, 4), "float32")})
    with pytest.raises(errors.ToolchainError, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        compile_model(CompileArgs(src, preset, tmp_path))
    assert not (tmp_path / "tc").exists()


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory):
    torch.manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=3, dilation=3), torch.nn.Tanh()).eval()
    inputs = {"x": np.random.default_rng(0).standard_normal((1, 4, 10, 10)).astype("float32")}
    src = source.from_torch("small", lambda: module, inputs)
    root = tmp_path_factory.mktemp("small")
    return src, compile_model(CompileArgs(src, targets.get_target("host"), root)), root


def test_wrong_input_shape_or_dtype_at_run_time(small_artifact):
    _, artifact, _ = small_artifact
    model = CompiledModel(artifact)
    expected = r"compiled for float32\[1, 4, 10, 10\], got float32\[1, 4, 9, 10\]"
    with pytest.raises(errors.InputMismatchError, match=expected):
        model.run({"x": np.zeros((1, 4, 9, 10), "float32")})
    with pytest.raises(errors.InputMismatchError, match="got float64"):
        model.run({"x": np.zeros((1, 4, 10, 10), "float64")})
    with pytest.raises(errors.InputMismatchError, match="takes inputs"):
        model.run({"y": np.zeros((1, 4, 10, 10), "float32")})


def test_unchanged_model_is_reused_and_force_rebuilds(small_artifact, host):
    src, artifact, root = small_artifact
    before = artifact.library.stat().st_mtime_ns
    again = compile_model(CompileArgs(src, host, root))
    assert again.library.stat().st_mtime_ns == before
    forced = compile_model(CompileArgs(src, host, root, force=True))
    assert forced.library.stat().st_mtime_ns != before
    assert not [p for p in forced.root.parent.iterdir() if p.name.startswith(".")], "staging dirs left behind"


def test_failed_rebuild_keeps_the_previous_artifact(small_artifact, host):
    src, artifact, root = small_artifact
    broken = host.replace(cross_compiler="no-such-c++")
    with pytest.raises(errors.ToolchainError):
        compile_model(CompileArgs(src, broken, root, force=True))
    assert artifact.exists() and require_ok(verify_model(artifact, host))


def test_verify_catches_a_wrong_result(small_artifact, host, tmp_path):
    _, artifact, _ = small_artifact
    inputs, expected = artifact.load_golden()
    tampered = {k: v.copy() for k, v in expected.items()}
    next(iter(tampered.values()))[0, 2, 5, 7] += 0.5
    np.savez(artifact.golden_expected, **tampered)
    try:
        result = verify_model(artifact, host, second_reference=False)
        assert not result.ok
        worst = result.checks[0].worst[0]
        assert tuple(int(i) for i in worst[0]) == (0, 2, 5, 7)
        with pytest.raises(errors.VerificationError):
            require_ok(result)
    finally:
        np.savez(artifact.golden_expected, **expected)


@pytest.mark.parametrize("actual, ok", [(np.array([1.0, 2.0, 3.0], "float32"), True),
                                        (np.array([1.0, 2.0, 3.001], "float32"), False),
                                        (np.array([1.0, np.nan, 3.0], "float32"), False),
                                        (np.array([1.0, 2.0], "float32"), False)])
def test_compare(actual, ok):
    check = compare("y", actual, np.array([1.0, 2.0, 3.0], "float32"), Tolerance(rel_l2=1e-5, max_abs=1e-4))
    assert check.ok is ok


def test_compare_reports_errors_exactly():
    check = compare("y", np.array([3.0, 4.0 + 0.05], "float32"), np.array([3.0, 4.0], "float32"),
                    Tolerance(rel_l2=1.0, max_abs=1.0))
    assert check.max_abs == pytest.approx(0.05, rel=1e-5)
    assert check.rel_l2 == pytest.approx(0.05 / 5.0, rel=1e-5)


def test_build_outputs_stay_out_of_the_source_tree():
    assert artifact_dir("m", "host").parts[-3:] == ("build", "m", "host")
    assert Path(".gitignore").read_text().count("/build/") == 1


def test_list_targets_cli(capsys):
    assert main(["list", "targets"]) == 0
    assert "host" in capsys.readouterr().out


def test_a_build_hook_is_registered_only_for_its_block():
    import tvm_ffi

    from atrous.pipeline.global_hook import registered

    name = "atrous.test.hook"
    with registered(name, lambda: 1):
        assert tvm_ffi.get_global_func(name)() == 1
        with registered(name, lambda: 2):  # a nested build gets its own and gives the outer one back
            assert tvm_ffi.get_global_func(name)() == 2
        assert tvm_ffi.get_global_func(name)() == 1
    assert tvm_ffi.get_global_func(name, allow_missing=True) is None


def test_winograd_flag_sets_the_options_and_is_refused_off_cpu(capsys):
    """--winograd MODE -> the build options (reported as a "rewrites:" line); other tiles, and forcing a tile on a
    GPU target, refused."""
    from atrous.pipeline.cli import _options, _rewrites_line, parser

    host, h100 = targets.get_target("host"), targets.get_target("h100")
    options = _options(parser().parse_args(["compile", "fcn-atrous", "--winograd", "2"]), host)
    assert options.winograd == "2" and options.drop_dead_taps
    assert _options(parser().parse_args(["compile", "fcn-atrous"]), host).winograd == "auto"
    every = ("drop_dead_taps, partition_borders, transposed_phases, pad_to_tiles, fast_math, separable_resize, "
             "merge_summed_convs, pixel_conv, blocked_layout")
    # integer_convs: what QDQ (int8) graphs' convs become (passes/integer_convs.py); "auto" by default
    assert _rewrites_line(options.key()) == f"rewrites: {every}, winograd 2, integer_convs auto"
    off = _options(parser().parse_args(["compile", "fcn-atrous", "--winograd", "off"]), host)
    assert _rewrites_line(off.key()) == f"rewrites: {every}, integer_convs auto"
    assert "fast_math" not in _rewrites_line(dataclasses.replace(off, fast_math=False).key())
    assert _options(parser().parse_args(["compile", "wavenet", "--target", "h100"]), h100).winograd == "auto"
    with pytest.raises(SystemExit):
        main(["compile", "fcn-atrous", "--winograd", "3"])  # only F(2x2) and F(4x4) exist
    assert "invalid choice" in capsys.readouterr().err
    assert main(["compile", "fcn-atrous", "--preset", "tiny", "--target", "h100", "--winograd", "4"]) == 2
    assert "--winograd 4 rewrites convs for CPU targets" in capsys.readouterr().err


def test_winograd_on_wide_dilated_convs_verifies_through_the_pipeline(host, tmp_path):
    """128-channel 3x3 convs (rate 2, then dense): over the threshold, rewritten, scheduled, built, verified."""
    from atrous.pipeline.interface import CompileArgs, compile_model, require_ok, verify_model
    from atrous.pipeline.optimize import OptimizeOptions
    from atrous.pipeline.tuning.tune import lowered_module

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(128, 128, 3, padding=2, dilation=2), torch.nn.ReLU(),
                                   torch.nn.Conv2d(128, 128, 3, padding=1)).eval()

    x = np.random.default_rng(0).standard_normal((1, 128, 17, 17)).astype("float32")
    src = source.from_torch("wide-3x3", net, {"x": x})
    options = OptimizeOptions(winograd="4")
    names = " ".join(gv.name_hint for gv, _ in lowered_module(src, host, options).functions_items())
    assert all(f"winograd_{kind}" in names for kind in ("input", "product", "output")), names
    artifact = compile_model(CompileArgs(src, host, tmp_path, options=options, tuned=False))
    require_ok(verify_model(artifact, host, second_reference=False))
    assert artifact.meta().options == options.key()  # meta.json says how it was built
    assert artifact.meta().winograd == {"F(4x4)": 2, "measured": 0}  # both convs rewritten


def test_bench_variant_changes_one_option():
    """make bench VARIANT=OPTION=VALUE: the extra column's build options, and what it refuses."""
    from atrous.pipeline.bench.suite import variant_options
    from atrous.pipeline.optimize import OptimizeOptions

    assert variant_options("winograd=off") == OptimizeOptions(winograd="off")
    assert variant_options("transposed_phases=false") == OptimizeOptions(transposed_phases=False)
    assert variant_options("winograd_min_channels=64") == OptimizeOptions(winograd_min_channels=64)
    with pytest.raises(ValueError, match="one of"):
        variant_options("database=/tmp")
    with pytest.raises(ValueError, match="true or false"):
        variant_options("pad_to_tiles=no")


def test_profile_times_each_kernel_and_the_cli_refuses_a_board_before_compiling(small_artifact, tmp_path, capsys):
    from atrous.pipeline.bench.profile import BUILTINS, profile

    _, artifact, _ = small_artifact
    result = profile(CompiledModel(artifact), artifact.load_golden()[0], runs=3)
    names = [k.name for k in result.kernels]
    conv = next(k for k in result.kernels if "conv2d" in k.name)
    assert conv.calls >= 1 and conv.seconds > 0 and BUILTINS in names, names
    assert [k.seconds for k in result.kernels] == sorted((k.seconds for k in result.kernels), reverse=True)
    assert 0 < result.kernel_seconds < 2 * result.run_seconds
    table = result.table(top=1)
    assert result.kernels[0].name[:52] in table and f"({len(names) - 1} more kernels)" in table
    # every conv kernel the VM calls has its FLOP count (the weight-prepacked variants too), and a rate
    assert all(k.flops and k.gflops == pytest.approx(k.flops / k.seconds / 1e9) for k in result.kernels
               if "conv2d" in k.name), [(k.name, k.flops) for k in result.kernels]
    assert result.flops == sum(k.flops or 0 for k in result.kernels) > 0
    assert "of the measured FMA peak (100 GFLOP/s)" in result.table(peak_gflops=100.0)
    assert main(["profile", "deeplabv3-mobilenet", "--preset", "tiny", "--target", "rpi4",
                 "--build-dir", str(tmp_path)]) == 2
    assert "times the model on this machine" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "refused before compiling"


def test_bench_runs_on_every_core_and_prints_the_count_each_runtime_used(small_artifact, tmp_path):
    """TVM alone would size its pool at half the cores on x86 (1 of 2 here); atrous sets every physical core and
    bench prints what the runtime reports, in a fresh process with none of the thread variables set."""
    import json
    import subprocess
    import sys

    from atrous.pipeline.threads import physical_cores

    _, artifact, _ = small_artifact
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "ATROUS_THREADS")}
    done = subprocess.run([sys.executable, "-m", "atrous.pipeline.cli", "bench", str(artifact.onnx), "--json",
                           "--repeat", "2", "--build-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    timings = {t["runtime"]: t["threads"] for t in json.loads(done.stdout.splitlines()[-1])["timings"]}
    assert timings == {"atrous": physical_cores(), "onnxruntime": physical_cores()}, timings


def test_run_memory_is_measured_for_atrous_and_onnxruntime_each_in_its_own_process(small_artifact):
    from atrous.pipeline.bench.memory import measure

    _, artifact, _ = small_artifact
    for kind, paths in (("atrous", [artifact.root]), ("onnxruntime", [artifact.onnx, artifact.golden_inputs])):
        result = measure(kind, *paths)
        assert result["peak_mb"] >= result["baseline_mb"] > 10 and result["model_mb"] >= 0, (kind, result)


def test_bench_builds_this_cpu_and_the_other_isas_it_runs(host):
    from atrous.pipeline.bench.suite import cpu_builds
    from atrous.targets.cpu_choice import features

    builds = cpu_builds("host", None)
    assert builds["native"] is host
    assert ("znver3" in builds) == ("avx512f" in features(host.target_dict()))  # an AVX-512 machine times AVX2
    assert list(cpu_builds("host", "")) == ["native"]
    assert "sapphirerapids" not in cpu_builds("host", "sapphirerapids") or "amx-tile" in features(host.target_dict())


def test_physical_cores_count_smt_siblings_once(tmp_path):
    from atrous.pipeline.threads import physical_cores

    for cpu, (package, core) in enumerate([(0, 0), (0, 1), (0, 0), (0, 1), (1, 0)]):  # 2 siblings, 2nd package
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert physical_cores({0, 1, 2, 3, 4}, tmp_path) == 3
    assert physical_cores({0, 2}, tmp_path) == 1
    assert physical_cores({0, 7}, tmp_path) == 2  # cpu7 has no topology: a core of its own


def test_kernel_flops_count_a_multiply_add_as_two():
    import tvm
    from tvm import te

    from atrous.pipeline.flops import kernel_flops

    a, b = te.placeholder((8, 16), name="a"), te.placeholder((16, 4), name="b")
    k = te.reduce_axis((0, 16), name="k")
    c = te.compute((8, 4), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    mod = tvm.IRModule({"matmul": te.create_prim_func([a, b, c])})
    assert kernel_flops(mod) == {"matmul": 2 * 8 * 4 * 16}


def test_fma_peak_is_measured_and_a_missing_compiler_names_the_package(tmp_path, monkeypatch):
    from atrous.pipeline.bench import peak

    one = peak.fma_peak(1, rounds=1, seconds=0.05, build_root=tmp_path)
    assert 1 < one < 1e4, one  # GFLOP/s of one core: any real CPU of this decade is inside
    assert list((tmp_path / "peak").glob("fma_peak-*.so")), "the kernel is built once, into the build tree"
    with pytest.raises(ValueError):
        peak.fma_peak(0)
    monkeypatch.setattr(peak.shutil, "which", lambda _: None)
    with pytest.raises(errors.ToolchainError, match="apt-get install gcc"):
        peak._library(tmp_path / "elsewhere")
