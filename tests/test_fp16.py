"""fp16 builds (--precision fp16, passes/half_precision.py) for the GPU presets.

Without a GPU: a CUDA build is compiled and inspected (half buffers, float16 arithmetic in the PTX, a cubin for
each preset's sm, float32 at the model's boundary); on lavapipe (Mesa's CPU Vulkan device) fp16 builds run and
are compared with PyTorch by the fp16 criterion (rel-L2 <= 1e-2), also through a bundle's on-device runtime, and
the GLSL generator's float16 arithmetic with NumPy. The CUDA run itself is the ``gpu``-marked test, skipped with
the reason where no GPU exists. Presets without float16 arithmetic are refused with the reason.
"""

import re
import subprocess

import numpy as np
import pytest

from atrous import targets
from atrous.pipeline import source
from atrous.pipeline.devices import cuda
from atrous.pipeline.devices.bundle import make_bundle
from atrous.pipeline.devices.vulkan.glsl import ShaderCodegenError
from atrous.pipeline.errors import AtrousError
from atrous.pipeline.interface import CompileArgs, check_precision, compile_model, require_ok, verify_model
from atrous.pipeline.verify import Criteria, report

from test_cuda import CUDA_PRESETS, _check_artifact, _kernel_names, _local_gpu_preset
from test_vulkan import DESKTOP, _run, _te_kernel, _te_module

FP16 = Criteria("fp16")


def _compile(name, preset, build_root):
    return compile_model(CompileArgs(source.from_zoo(name, "tiny"), preset, build_root, precision="fp16"))


def _kernels(cuda_source: str) -> dict[str, str]:
    """Each kernel's definition (signature and body) in TVM's CUDA C, by name."""
    starts = list(re.finditer(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(([^)]*)\) \{',
                              cuda_source))
    return {m.group(1): cuda_source[m.start():(starts[i + 1].start() if i + 1 < len(starts) else None)]
            for i, m in enumerate(starts)}


def test_cuda_fp16_build_keeps_activations_in_half_with_float_sums(build_root):
    preset = targets.get_target("h100")
    artifact = _compile("deeplabv3-mobilenet", preset, build_root)
    meta = artifact.meta()
    assert meta.precision == "fp16" and artifact.root.name == "h100-fp16" and meta.options["precision"] == "fp16"
    # the model's boundary stays float32: the runtime, golden data and the verification are those of fp32
    assert {s.dtype for s in meta.inputs + meta.outputs} == {"float32"}
    _check_artifact(artifact, preset)
    cuda_source = (artifact.root / "device" / "kernels.cu").read_text()
    assert "#include <cuda_fp16.h>" in cuda_source
    convs = {name: text for name, text in _kernels(cuda_source).items() if "conv2d" in name}
    assert convs
    for name, text in convs.items():
        signature = text.split("{", 1)[0]
        assert "float*" not in signature and "half* __restrict__" in signature, name  # half in, half out
        assert "((float)" in text, name  # float16 operands converted, summed in float (ACCUMULATOR)
    ptx = cuda.compile_source(cuda_source, "sm_90", fmt="ptx").decode()
    # the epilogues (bias, clip, residual adds) are half arithmetic; the convs convert half loads to float
    assert re.search(r"\b(add|max|min|fma\.rn)\.f16\b", ptx) and "cvt.f32.f16" in ptx


@pytest.mark.parametrize("preset_name", [p for p in CUDA_PRESETS if p != "h100"])
def test_cuda_fp16_device_code_compiles_for_each_presets_sm(preset_name, build_root):
    """NVRTC builds the h100 fp16 kernels (the CUDA C does not depend on the preset) for every other preset's sm."""
    artifact = _compile("deeplabv3-mobilenet", targets.get_target("h100"), build_root)
    cuda_source = (artifact.root / "device" / "kernels.cu").read_text()
    sm = targets.get_target(preset_name).target_dict()["arch"]
    info = cuda.inspect_cubin(cuda.compile_source(cuda_source, sm))
    assert info.sm == sm and _kernel_names(cuda_source) <= set(info.kernels)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["deeplabv3-mobilenet", "wavenet"])
def test_fp16_on_the_local_gpu_matches_pytorch(name, build_root):
    preset_name = _local_gpu_preset()
    if preset_name is None:
        pytest.skip("no NVIDIA GPU with a matching preset on this machine (nvidia-smi absent or no GPU)")
    preset = targets.get_target(preset_name)
    result = require_ok(verify_model(_compile(name, preset, build_root), preset, criteria=FP16))
    print(report(result.checks, result.tolerance, result.notes))
    assert result.device == "this machine's GPU"


@pytest.mark.parametrize("preset_name", ["host", "rpi4", "jetson-orin-cpu"])
def test_fp16_is_refused_on_cpu_presets_with_the_alternative(preset_name, build_root):
    preset = targets.get_target(preset_name)
    with pytest.raises(AtrousError, match=rf"--precision fp16: '{preset_name}' is a CPU target; fp16 has kernels "
                                          r"for GPU presets \(CUDA, Vulkan\) only.*use --precision int8, or fp32"):
        _compile("wavenet", preset, build_root)  # refused before anything is exported or built


def test_fp16_is_refused_on_gpus_without_float16_arithmetic():
    h100, desktop = targets.get_target("h100"), targets.get_target(DESKTOP)
    maxwell = h100.replace(name="gtx980", target={**h100.target_dict(), "arch": "sm_52"})
    with pytest.raises(AtrousError, match="'gtx980' is sm_52; float16 arithmetic needs sm_53 or newer"):
        check_precision("fp16", maxwell)
    plain = desktop.replace(target={k: v for k, v in desktop.target_dict().items() if k != "supports_float16"})
    with pytest.raises(AtrousError, match=f"the Vulkan target '{DESKTOP}' does not declare shaderFloat16, which "
                                          "float16 kernels need"):
        check_precision("fp16", plain)
    for name in targets.TARGETS:  # every GPU preset has float16 arithmetic
        if targets.TARGETS[name].family in ("cuda", "vulkan"):
            check_precision("fp16", targets.TARGETS[name])


# -- Vulkan (lavapipe) ----------------------------------------------------------------------------------------------

def _vulkan_float16() -> str | None:
    """Why this machine's Vulkan device cannot run float16 shaders, or None (a probe that never raises)."""
    try:
        from atrous.pipeline.devices.vulkan.backend import device_info

        info = device_info()
    except Exception as err:  # noqa: BLE001 - no loader, no device, no runtime build: the reason to skip
        return f"no Vulkan device: {err}"
    missing = [f for f in ("shaderFloat16", "storageBuffer16BitAccess") if info.get(f) != "1"]
    return f"Vulkan device '{info.get('name')}' lacks {', '.join(missing)}" if missing else None


@pytest.fixture(scope="module")
def float16_device():
    problem = _vulkan_float16()
    if problem:
        pytest.skip(problem)


def _elementwise(a, b):
    """Half products, sums, comparisons, constants and math functions in one kernel."""
    from tvm import te, tirx

    half = "float16"

    def pick(k, i):
        x, y = a[i], b[i]
        rows = [x * y + x, tirx.Max(x, y) - tirx.const(0.5, half), tirx.tanh(x), tirx.sigmoid(y),
                tirx.exp(x) / tirx.const(4.0, half)]
        value = rows[-1]
        for index in range(len(rows) - 2, -1, -1):
            value = tirx.Select(k == index, rows[index], value)
        return value

    return te.compute((5, 64), pick, name="out")


def test_float16_arithmetic_in_glsl_matches_numpy(float16_device):
    library, code = _te_kernel(_elementwise, [(64,), (64,)], "float16")
    shader = code.shaders[0].source
    assert "#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require" in shader
    assert "#extension GL_EXT_shader_16bit_storage : require" in shader and "float16_t" in shader
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-3, 3, 64).astype("float16") for _ in range(2))
    got = _run(library, [a, b], (5, 64), "float16").astype(np.float64)
    x, y = a.astype(np.float64), b.astype(np.float64)
    expected = [x * y + x, np.maximum(x, y) - 0.5, np.tanh(x), 1 / (1 + np.exp(-y)), np.exp(x) / 4]
    for name, row, want in zip(("mul-add", "max", "tanh", "sigmoid", "exp"), got, expected):
        # float16 keeps 11 significant bits: a few roundings of 2^-11 relative each
        np.testing.assert_allclose(row, want, rtol=4e-3, atol=2e-3, err_msg=name)


def test_float16_kernel_for_a_target_without_shader_float16_is_refused():
    from atrous.pipeline.build import build as build_for

    desktop = targets.get_target(DESKTOP)
    plain = desktop.replace(target={k: v for k, v in desktop.target_dict().items() if k != "supports_float16"})
    with pytest.raises(ShaderCodegenError, match=r"float16 arithmetic, which the target does not support "
                                                 r"\(no shaderFloat16\)"):
        build_for(_te_module(_elementwise, [(64,), (64,)], "float16"), plain)


@pytest.mark.parametrize("name", ["deeplabv3-mobilenet", "wavenet"])
def test_fp16_on_lavapipe_matches_pytorch(name, float16_device, build_root):
    preset = targets.get_target(DESKTOP)
    artifact = _compile(name, preset, build_root)
    result = verify_model(artifact, preset, criteria=FP16)
    print(report(result.checks, result.tolerance, result.notes))
    for check in result.checks:
        print(f"{name} {check.name} vs {check.reference}: max-abs {check.max_abs:.3e}, rel-L2 {check.rel_l2:.3e}")
    assert result.ok and {c.reference for c in result.checks} == {"pytorch", "onnxruntime"}
    assert all(c.rel_l2 <= FP16.max_rel_l2 for c in result.checks)
    shaders = sorted((artifact.root / "device").glob("*conv*.comp"))
    assert shaders and all("float16_t" in s.read_text() for s in shaders)


@pytest.mark.slow
def test_fp16_vulkan_bundle_runs_through_the_on_device_runtime(float16_device, build_root):
    """atrous-run loads the float16 shaders (the runtime enables the device's float16 features) and checks the
    outputs by the fp16 criterion the bundle carries."""
    artifact = _compile("wavenet", targets.get_target(DESKTOP), build_root)
    bundle = make_bundle(artifact, FP16)
    done = subprocess.run([str(bundle / "run.sh")], capture_output=True, text=True, timeout=300)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rel-L2 <= 0.01" in done.stdout and re.search(r"logits\s+max-abs \S+\s+rel-L2 \S+\s+ok", done.stdout)
