"""CUDA targets without a GPU: every zoo model compiles for a GPU preset, every preset compiles for its sm, and the
artifacts are inspected (cubin for the right sm holding every kernel, host code for the right CPU, PTX accepted by
ptxas where the installed toolkit targets that sm); bundles refuse to run here with the reason. Running on a GPU is
the ``gpu``-marked test at the end (and runtime/gpu_check.py), skipped with the reason where no GPU exists.
"""

import os
import re
import shutil
import subprocess

import pytest

from atrous import targets
from atrous.models import MODELS
from atrous.pipeline.devices import cuda
from atrous.pipeline import source
from atrous.pipeline.devices.bundle import make_bundle
from atrous.pipeline.errors import ToolchainError
from atrous.pipeline.interface import CompileArgs, compile_model

CUDA_PRESETS = [n for n, p in targets.TARGETS.items() if p.family == "cuda"]
ELF_MACHINE = {"x86_64": "x86-64", "aarch64": "aarch64"}


def _compile(name, preset_name, build_root):
    preset = targets.get_target(preset_name)
    return preset, compile_model(CompileArgs(source.from_zoo(name, "tiny"), preset, build_root))


def _kernel_names(cuda_source: str) -> set[str]:
    return set(re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', cuda_source))


def _file(path) -> str:
    return subprocess.run(["file", "-L", str(path)], capture_output=True, text=True).stdout


def _check_artifact(artifact, preset):
    sm = preset.target_dict()["arch"]
    device = artifact.root / "device"
    cubin = (device / "kernels.cubin").read_bytes()
    info = cuda.inspect_cubin(cubin)
    assert info.machine == cuda.EM_CUDA and info.sm == sm
    names = _kernel_names((device / "kernels.cu").read_text())
    assert names and names <= set(info.kernels), names - set(info.kernels)
    library = artifact.library.read_bytes()
    # the cubin itself is embedded (a device needs no compiler), not the CUDA source
    assert cubin[:65536] in library and b"__global__" not in library
    assert f"device cuda {sm}".encode() in library
    assert ELF_MACHINE[preset.runtime_arch] in _file(artifact.library)
    return info


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_zoo_model_compiles_for_a_gpu_with_its_cubin_embedded(name, build_root):
    preset, artifact = _compile(name, "h100", build_root)
    info = _check_artifact(artifact, preset)
    # convs get the register-tiled DirectConv schedule, not one thread per output with a memory accumulator
    source_text = (artifact.root / "device" / "kernels.cu").read_text()
    convs = [k for k in info.kernels if "conv" in k]
    assert convs and all(re.search(rf"__launch_bounds__\(128\) {k}\(", source_text) for k in convs)


@pytest.mark.parametrize("preset_name, name", [(p, sorted(MODELS)[i % len(MODELS)])
                                               for i, p in enumerate(CUDA_PRESETS)])
def test_zoo_device_code_compiles_for_each_presets_sm(preset_name, name, build_root):
    """The CUDA C of a model does not depend on the GPU preset (same limits, same schedules), so NVRTC compiles
    the kernels of the h100 build for each other preset's sm, each cubin holding every kernel: a different zoo
    model per preset (all of them for every preset cost ~100 s more of make test)."""
    _, artifact = _compile(name, "h100", build_root)  # reused from the test above in this session's build root
    source_text = (artifact.root / "device" / "kernels.cu").read_text()
    sm = targets.get_target(preset_name).target_dict()["arch"]
    info = cuda.inspect_cubin(cuda.compile_source(source_text, sm))
    assert info.sm == sm and _kernel_names(source_text) <= set(info.kernels)


# One full build per host CPU x GPU generation that differs from h100 (the zoo test): the other x86_64 presets
# differ from h100 only in their sm, which test_zoo_device_code_compiles_for_each_presets_sm compiles.
FULL_BUILD_PRESETS = ["h100", "jetson-orin", "jetson-xavier"]


@pytest.mark.parametrize("preset_name", FULL_BUILD_PRESETS)
def test_cuda_presets_compile_for_their_sm_and_cpu(preset_name, build_root):
    preset, artifact = _compile("wavenet", preset_name, build_root)  # the smallest zoo model: every preset
    _check_artifact(artifact, preset)
    bundle = make_bundle(artifact, preset.tolerance)
    assert {"libtvm_runtime_cuda.so", "libcudart.so.13"} <= {p.name for p in (bundle / "lib").iterdir()}
    assert ELF_MACHINE[preset.runtime_arch] in _file(bundle / "lib" / "libtvm_runtime_cuda.so")


def _ptxas_archs() -> list[str]:
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        return []
    listed = subprocess.run([ptxas, "--help"], capture_output=True, text=True).stdout
    return sorted(set(re.findall(r"sm_\d+", listed)))


def test_generated_ptx_is_accepted_by_the_installed_ptxas(build_root, tmp_path):
    """A second opinion on the device code: NVRTC's PTX of the same kernels assembled by the toolkit's ptxas."""
    archs = _ptxas_archs()
    if not archs:
        pytest.skip("no CUDA toolkit ptxas on this machine (NVRTC's own cubins are checked by the other tests)")
    preset, artifact = _compile("deeplabv3-mobilenet", "h100", build_root)
    sm = preset.target_dict()["arch"]
    if sm not in archs:
        pytest.skip(f"the installed ptxas does not target {sm}")
    ptx = cuda.compile_source((artifact.root / "device" / "kernels.cu").read_text(), sm, fmt="ptx")
    (tmp_path / "k.ptx").write_bytes(ptx)
    done = subprocess.run(["ptxas", f"-arch={sm}", str(tmp_path / "k.ptx"), "-o", str(tmp_path / "k.cubin")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert cuda.inspect_cubin((tmp_path / "k.cubin").read_bytes()).sm == sm


def _has_driver() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia/version"))


def test_bundle_on_a_machine_without_gpu_says_what_is_missing(build_root):
    if _has_driver():
        pytest.skip("this machine has an NVIDIA driver: the no-GPU message cannot be observed here")
    preset, artifact = _compile("wavenet", "h100", build_root)
    bundle = make_bundle(artifact, preset.tolerance)
    done = subprocess.run([str(bundle / "run.sh")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "runs on an NVIDIA GPU (sm_90) but there is no NVIDIA driver here" in done.stderr


def test_jetson_bundle_under_qemu_reaches_the_driver_check(build_root):
    """The aarch64 runtime of a Jetson bundle loads the model and stops at the missing driver, not before."""
    preset, artifact = _compile("wavenet", "jetson-orin", build_root)
    bundle = make_bundle(artifact, preset.tolerance)
    emulator = targets.get_target("rpi4").emulator
    done = subprocess.run([*emulator, str(bundle / "bin" / "atrous-run"), str(bundle / "model.so"), "--info"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "(sm_87) but there is no NVIDIA driver here" in done.stderr, done.stderr


def test_an_sm_nvrtc_cannot_target_is_refused_with_the_range():
    with pytest.raises(ToolchainError, match=r"cannot generate \(it targets sm_\d+ \.\. sm_\d+\)"):
        cuda.require_arch("sm_35", "kepler")


def test_missing_nvrtc_names_the_packages(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cuda(name, *args, **kwargs):
        if name.startswith("cuda.bindings") or name == "cuda":
            raise ImportError("No module named 'cuda'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cuda)
    with pytest.raises(ToolchainError, match="pip install cuda-bindings==.*nvidia-cuda-nvrtc-cu12=="):
        cuda.compile_source("__global__ void k() {}", "sm_90")


def test_nvrtc_errors_show_the_compiler_message():
    with pytest.raises(ToolchainError, match="could not compile the generated CUDA code for sm_87:\n.*error"):
        cuda.compile_source('extern "C" __global__ void k(float* a) { a[0] = undefined_name; }', "sm_87")


def _local_gpu_preset() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        return None
    sm = "sm_" + done.stdout.split()[0].replace(".", "")
    return next((n for n in CUDA_PRESETS if targets.TARGETS[n].target_dict()["arch"] == sm
                 and targets.TARGETS[n].runtime_arch == os.uname().machine), None)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["deeplabv3-mobilenet", "wavenet"])
def test_verify_on_the_local_gpu_matches_pytorch(name, build_root):
    preset_name = _local_gpu_preset()
    if preset_name is None:
        pytest.skip("no NVIDIA GPU with a matching preset on this machine (nvidia-smi absent or no GPU)")
    from atrous.pipeline.interface import require_ok, verify_model

    preset, artifact = _compile(name, preset_name, build_root)
    result = require_ok(verify_model(artifact, preset))
    assert result.device == "this machine's GPU" and all(c.ok for c in result.checks)


def test_gpu_check_pack_carries_a_faithful_pytorch_reference_and_reports_a_missing_gpu(build_root, tmp_path):
    """What can be checked of the GPU check without a GPU: the pack's TorchScript reproduces the stored PyTorch
    outputs on the CPU, and the check reports (not crashes on) a bundle that cannot run here."""
    import importlib.util

    import numpy as np
    import torch

    from atrous.pipeline.devices.gpupack import pack

    out = pack("h100", ["wavenet"], "tiny", tmp_path / "pack", build_root)
    bundle = out / "models" / "wavenet.tiny"
    spec = importlib.util.spec_from_file_location("gpu_check", out / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    inputs = [torch.from_numpy(a) for a in gpu_check._golden(bundle, "input")]
    got = torch.jit.load(str(bundle / "model.ts"))(*inputs)
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    for ours, stored in zip(got, gpu_check._golden(bundle, "expected")):
        max_abs, rel_l2 = gpu_check.errors(ours.detach().numpy(), stored)
        assert rel_l2 < 1e-6, rel_l2
    assert gpu_check.errors(np.ones(4, np.float32), np.ones(4, np.float32)) == (0.0, 0.0)
    if not _has_driver():
        row = gpu_check.check(bundle, repeat=1, rel_l2=1e-4)
        assert row["ok"] is False and "no NVIDIA driver" in row["error"][0]
        assert "| wavenet.tiny | no |" in gpu_check.markdown([row], "none", 1)


def test_tuning_candidates_for_a_gpu_build_with_device_code(build_root):
    """The builder half of GPU tuning (the measuring half needs the GPU): a CUDA candidate builds in
    MetaSchedule's worker processes with NVRTC, as model builds do."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from atrous.pipeline.tuning import measure, tune
    from atrous.pipeline.optimize import OptimizeOptions, apply_schedules

    h100 = targets.get_target("h100")
    target = h100.tvm_target()
    lowered = tune.lowered_module(source.from_zoo("wavenet", "tiny"), h100, OptimizeOptions())
    scheduled = apply_schedules(lowered, target, OptimizeOptions())
    name = next(gv for gv, f in scheduled.functions_items()
                if isinstance(f, tvm.tirx.PrimFunc) and "conv" in gv.name_hint)
    candidate = tvm.IRModule({"main": scheduled[name].with_attr("global_symbol", "main")})
    (result,) = measure.local_builder(workers=1).build([ms.builder.BuilderInput(candidate, target)])
    assert result.error_msg is None, result.error_msg
    import tarfile

    with tarfile.open(result.artifact_path) as tar:  # the candidate carries a cubin for sm_90, not CUDA source
        blobs = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    assert b"cuda.module" in blobs or b"cubin" in blobs
    assert b"__global__" not in blobs
