"""The Vulkan backend on a real Vulkan implementation: Mesa's lavapipe (a conformant CPU device) in CI.

Every zoo model (tiny) and every dilation case compile through TIR -> GLSL -> SPIR-V, export into model.so, load
back in a fresh VM and match PyTorch; the on-device runtime (atrous-run) runs a Vulkan bundle; TIR's integer
division semantics survive the trip to GLSL; the aarch64 build of the backend links; bad input fails clearly.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from atrous import targets
from atrous.models import MODELS
from atrous.pipeline import source
from atrous.pipeline.devices.bundle import make_bundle
from atrous.pipeline.errors import ToolchainError
from atrous.pipeline.interface import CompileArgs, compile_model, verify_model
from atrous.pipeline.verify import report
from atrous.pipeline.devices.vulkan import payload, spirv
from atrous.pipeline.devices.vulkan.glsl import KernelInfo, Shader, ShaderCodegenError

from dilation_cases import CASES, build

DESKTOP = "vulkan-desktop"


@pytest.fixture(scope="module")
def desktop():
    return targets.get_target(DESKTOP)


def _verify(src, preset, build_root):
    artifact = compile_model(CompileArgs(src, preset, build_root))
    result = verify_model(artifact, preset)
    print(report(result.checks, result.tolerance, result.notes))
    return artifact, result


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_zoo_model_runs_on_vulkan_and_matches_pytorch(name, desktop, build_root):
    artifact, result = _verify(source.from_zoo(name, "tiny"), desktop, build_root)
    assert result.ok and result.device == "local"
    assert {c.reference for c in result.checks} == {"pytorch", "onnxruntime"}
    for check in result.checks:
        assert check.rel_l2 < desktop.tolerance.rel_l2 and check.max_abs < desktop.tolerance.max_abs, check
    shaders = sorted((artifact.root / "device").glob("*.comp"))
    assert shaders and all(s.with_suffix(".spv").is_file() for s in shaders)
    assert all(s.read_text().startswith("#version 450") for s in shaders)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_dilated_case_runs_on_vulkan_and_matches_pytorch(case, desktop, build_root):
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal(case.shape).astype("float32")}
    src = source.from_torch(f"vulkan-dilation-{case.name}", lambda: build(case), inputs)
    _, result = _verify(src, desktop, build_root)
    assert result.ok, report(result.checks, result.tolerance, result.notes)


def _te_module(compute, shapes, dtype, name="out"):
    """A one-stage TE computation with its two loops bound to blockIdx.x and threadIdx.x."""
    from tvm import s_tir, te

    inputs = [te.placeholder(s, dtype, name=f"in{i}") for i, s in enumerate(shapes)]
    out = compute(*inputs)
    sch = s_tir.Schedule(te.create_prim_func([*inputs, out]))
    outer, inner = sch.get_loops(sch.get_sblock(name))
    sch.bind(outer, "blockIdx.x")
    sch.bind(inner, "threadIdx.x")
    return sch.mod


def _te_kernel(compute, shapes, dtype):
    """The TE computation built for vulkan-desktop: (library, the VulkanCode of the build)."""
    import tvm

    from atrous.pipeline.devices.vulkan.backend import compiling_for

    with compiling_for(DESKTOP) as code:
        library = tvm.compile(_te_module(compute, shapes, dtype), target=targets.get_target(DESKTOP).tvm_target())
    return library, code


def _run(library, arrays, out_shape, dtype):
    import tvm

    dev = tvm.vulkan(0)
    out = tvm.runtime.empty(out_shape, dtype, dev)
    library(*(tvm.runtime.tensor(a, dev) for a in arrays), out)
    return out.numpy()


def test_integer_division_keeps_tir_semantics_for_negative_operands():
    from tvm import te, tirx

    ops = (tirx.truncdiv, tirx.truncmod, tirx.floordiv, tirx.floormod)

    def compute(a, b):
        def pick(k, i):
            value = ops[3](a[i], b[i])
            for index in (2, 1, 0):
                value = tirx.Select(k == index, ops[index](a[i], b[i]), value)
            return value
        return te.compute((4, 64), pick, name="out")

    library, code = _te_kernel(compute, [(64,), (64,)], "int32")
    rng = np.random.default_rng(0)
    a = rng.integers(-50, 50, 64).astype("int32")
    b = rng.choice([-7, -3, 3, 7], 64).astype("int32")
    expected = np.stack([np.trunc(a / b), np.fmod(a, b), a // b, a % b]).astype("int32")
    np.testing.assert_array_equal(_run(library, [a, b], (4, 64), "int32"), expected)
    assert "%" not in code.shaders[0].source  # glslang's % is OpSMod: it would floor, not truncate


def test_math_intrinsics_match_numpy_including_overflow_ranges():
    from tvm import te, tirx
    from scipy.special import erf

    functions = (tirx.exp, tirx.tanh, tirx.sigmoid, tirx.erf, tirx.sqrt)

    def compute(x):
        def pick(k, i):
            value = functions[-1](tirx.abs(x[i]))
            for index in range(len(functions) - 2, -1, -1):
                value = tirx.Select(k == index, functions[index](x[i]), value)
            return value
        return te.compute((len(functions), 128), pick, name="out")

    library, _ = _te_kernel(compute, [(128,)], "float32")
    x = np.concatenate([np.linspace(-80, 80, 64), np.linspace(-3, 3, 64)]).astype("float32")
    got = _run(library, [x], (len(functions), 128), "float32")
    with np.errstate(over="ignore"):
        expected = [np.exp(x), np.tanh(x), 1 / (1 + np.exp(-x)), erf(x), np.sqrt(np.abs(x))]
    assert np.isfinite(got[1:]).all(), "tanh/sigmoid/erf must not overflow to inf or nan for large |x|"
    # Vulkan lets exp be off by 3 + 2|x| ulp (|x| <= 80 here); the rest keep a few ulp
    rtol = {"exp": (3 + 2 * 80) * 2.0 ** -23}
    for name, row, want in zip(("exp", "tanh", "sigmoid", "erf", "sqrt"), got, expected):
        np.testing.assert_allclose(row, want.astype("float32"), rtol=rtol.get(name, 2e-6), atol=2e-7, err_msg=name)


def test_workgroup_larger_than_the_preset_allows_is_refused_at_compile_time(desktop):
    from tvm import te

    from atrous.pipeline.build import build as build_for

    def compute(x):
        return te.compute((2, 128), lambda k, i: x[k * 128 + i] * 2.0, name="out")

    small = desktop.replace(target={**desktop.target_dict(), "max_num_threads": 64, "max_threads_per_block": 64})
    with pytest.raises(ShaderCodegenError, match=r"Vulkan kernel 'main_kernel': 128 threads per workgroup, more "
                                                 r"than the target's 64"):
        build_for(_te_module(compute, [(256,)], "float32"), small)


def _row_sum_module():
    """Row sums with the reduction bound to threadIdx.x: TVM lowers it through shared memory and barriers."""
    from tvm import s_tir, te

    x = te.placeholder((8, 64), "float32", name="x")
    k = te.reduce_axis((0, 64), name="k")
    out = te.compute((8,), lambda i: te.sum(x[i, k], axis=k), name="out")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    row, reduce = sch.get_loops(sch.get_sblock("out"))
    sch.bind(row, "blockIdx.x")
    sch.bind(reduce, "threadIdx.x")
    return sch.mod


def test_cross_thread_reduction_through_shared_memory_and_barriers(desktop):
    import tvm

    from atrous.pipeline.build import build as build_for
    from atrous.pipeline.devices.vulkan.backend import compiling_for

    with compiling_for(DESKTOP) as code:
        library = tvm.compile(_row_sum_module(), target=desktop.tvm_target())
    source_text = code.shaders[0].source
    assert "shared float" in source_text and "barrier();" in source_text
    x = np.random.default_rng(0).standard_normal((8, 64)).astype("float32")
    np.testing.assert_allclose(_run(library, [x], (8,), "float32"), x.sum(axis=1), rtol=1e-5, atol=1e-5)
    tiny = desktop.replace(target={**desktop.target_dict(), "max_shared_memory_per_block": 128})
    with pytest.raises(ShaderCodegenError, match="256 bytes of shared memory, more than the target's 128"):
        build_for(_row_sum_module(), tiny)


def test_missing_shader_tools_are_named_with_their_packages(monkeypatch):
    monkeypatch.setattr(spirv.shutil, "which", lambda tool: None)
    with pytest.raises(ToolchainError, match="needs glslangValidator, spirv-val; install them with: "
                                             "sudo apt-get install glslang-tools spirv-tools"):
        spirv.require_tools()


def test_a_shader_the_validator_rejects_is_reported_with_its_glsl():
    info = KernelInfo("broken_kernel", (), 0, (), (1, 1, 1), 0)
    broken = Shader("#version 450\nlayout(local_size_x = 1) in;\nvoid main() {\n  undefined_name = 1;\n}\n", info)
    with pytest.raises(ShaderCodegenError) as err:
        spirv.compile_shader(broken)
    message = str(err.value)
    assert "glslangValidator rejected the shader of kernel 'broken_kernel'" in message
    assert "    4>   undefined_name = 1;" in message  # the offending line, marked


@pytest.mark.slow
def test_bundle_runs_through_the_on_device_runtime_and_says_when_there_is_no_vulkan_device(desktop, build_root):
    artifact = compile_model(CompileArgs(source.from_zoo("wavenet", "tiny"), desktop, build_root))
    header, spirvs = payload.unpack(_embedded_payload(artifact.library.read_bytes()))
    assert set(header["functions"]) == {p.stem for p in (artifact.root / "device").glob("*.comp")}
    assert all(blob[:4] == b"\x03\x02\x23\x07" for blob in spirvs.values())  # SPIR-V magic, little endian
    bundle = make_bundle(artifact, desktop.tolerance)
    assert (bundle / "lib" / "libatrous_vulkan.so").is_file()
    assert not (bundle / "lib" / "libcudart.so.13").exists()
    done = subprocess.run([str(bundle / "run.sh")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout
    no_driver = dict(os.environ, VK_ICD_FILENAMES="/nonexistent/icd.json", VK_DRIVER_FILES="/nonexistent/icd.json")
    done = subprocess.run([str(bundle / "run.sh")], capture_output=True, text=True, timeout=300, env=no_driver)
    assert done.returncode != 0
    assert "sudo apt-get install mesa-vulkan-drivers" in done.stderr, done.stderr


def _embedded_payload(library: bytes) -> bytes:
    """The Vulkan module's bytes inside model.so (TVM stores imported modules' bytes verbatim)."""
    start = library.index(payload.MAGIC)
    (size,) = np.frombuffer(library[start + 8:start + 12], "<u4")
    header = library[start + 12:start + 12 + int(size)]
    functions = json.loads(header)["functions"].values()
    end = start + 12 + int(size) + max(f["spirv"][0] + f["spirv"][1] for f in functions)
    return library[start:end]


@pytest.mark.slow
def test_mali_bundle_is_cross_built_for_aarch64_without_a_link_to_libvulkan(build_root):
    mali = targets.get_target("mali-g610")
    artifact = compile_model(CompileArgs(source.from_zoo("wavenet", "tiny"), mali, build_root))
    bundle = make_bundle(artifact, mali.tolerance)
    for library in (bundle / "model.so", bundle / "lib" / "libatrous_vulkan.so"):
        described = subprocess.run(["file", "-L", str(library)], capture_output=True, text=True).stdout
        assert "ARM aarch64" in described, described
    needed = subprocess.run(["aarch64-linux-gnu-readelf", "-d", str(bundle / "lib" / "libatrous_vulkan.so")],
                            capture_output=True, text=True).stdout
    assert "libtvm_runtime.so" in needed and "libvulkan" not in needed, needed


def test_cli_lists_the_shaders_and_will_not_time_a_cpu_vulkan_device(build_root, capsys):
    from atrous.pipeline.cli import main

    args = ["compile", "wavenet", "--preset", "tiny", "--target", DESKTOP, "--build-dir", str(build_root),
            "--emit-shaders"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "device code in" in out and ".comp" in out
    assert main(["compile", "wavenet", "--preset", "tiny", "--build-dir", str(build_root), "--emit-shaders"]) == 2
    assert "runs on the CPU: it has no device code" in capsys.readouterr().err
    from atrous.pipeline.devices.vulkan.backend import device_info

    if device_info()["type"] == "cpu":  # lavapipe: timing it would report CPU emulation as GPU latency
        args = ["bench", "wavenet", "--preset", "tiny", "--target", DESKTOP, "--build-dir", str(build_root)]
        assert main(args) == 2
        assert "a CPU implementation of Vulkan: its timings are not GPU numbers" in capsys.readouterr().err


@pytest.mark.slow
def test_kernels_for_a_device_without_int64_are_narrowed_and_still_match_pytorch(desktop, build_root):
    # Adreno has no shaderInt64: TVM's 64-bit indices are narrowed to 32 bits. The same preset without int64 runs
    # here, so the narrowed kernels are checked numerically on lavapipe, not only for their types.
    assert not targets.get_target("adreno-740").target_dict().get("supports_int64")
    spec = {k: v for k, v in desktop.target_dict().items() if k != "supports_int64"}
    no_int64 = desktop.replace(name="vulkan-no-int64", target=spec)
    artifact, result = _verify(source.from_zoo("wavenet", "tiny"), no_int64, build_root)
    assert result.ok
    shaders = [p.read_text() for p in (artifact.root / "device").glob("*.comp")]
    assert shaders and not any("int64" in text for text in shaders)
