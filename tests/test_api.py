"""PyTorch users first: their own modules through the CLI and the Python API, .pt2 programs, and the package as a
wheel (one top-level package, ``atrous``) whose console script and API work in a fresh virtual environment."""

import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import atrous
from atrous.pipeline import cli
from atrous.pipeline.errors import AtrousError, InputMismatchError, VerificationError

# A model no fixture knows, written to a user's file: a dilated conv and a gated pair of convs, two outputs.
USER_FILE = '''
import torch
from torch import nn


class Gated(nn.Module):
    def __init__(self, channels=12):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=3, dilation=3)
        self.filt, self.gate = nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 1)
        self.head = nn.Conv2d(channels, 5, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        z = torch.tanh(self.filt(y)) * torch.sigmoid(self.gate(y))
        return self.head(z), z.mean(dim=(2, 3))


def make_model():
    torch.manual_seed(7)
    return Gated()
'''


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(USER_FILE)
    return path


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("my_net_for_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_model().eval()


def _cli_json(argv, capsys) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_module_in_a_users_file_compiles_and_verifies_against_pytorch_from_the_cli(user_file, build_root,
                                                                                      capsys):
    result = _cli_json(["verify", f"{user_file}:make_model", "--input-shape", "x:1x3x29x31", "--build-dir",
                        str(build_root), "--json"], capsys)
    assert result["ok"] and result["model"] == "my_net-make_model"
    assert {(c["output"], c["reference"]) for c in result["checks"]} == {
        ("output0", "pytorch"), ("output1", "pytorch"), ("output0", "onnxruntime"), ("output1", "onnxruntime")}


def test_the_api_compiles_verifies_runs_and_bundles_a_module(user_file, build_root, tmp_path):
    module = _load(user_file)
    x = torch.randn(1, 3, 26, 30)
    compiled = atrous.compile(module, (x,), name="gated", build_dir=build_root)
    report = compiled.verify()
    assert report.ok and {c.reference for c in report.checks} == {"pytorch", "onnxruntime"}
    assert "max-abs" in str(report) and "rel-L2" in str(report)
    other = torch.randn(1, 3, 26, 30)  # not the example input the reference was made with
    y, pooled = compiled(other)
    with torch.no_grad():
        want, want_pooled = module(other)
    assert isinstance(y, torch.Tensor) and y.shape == want.shape
    assert torch.linalg.norm(y - want) <= 1e-5 * torch.linalg.norm(want)
    assert torch.allclose(pooled, want_pooled, rtol=1e-5, atol=1e-6)
    assert isinstance(compiled(other.numpy())[0], np.ndarray)
    bundle = compiled.bundle(tmp_path / "out")
    assert (bundle / "run.sh").is_file() and (bundle / "model.so").is_file()
    with pytest.raises(AtrousError, match="not empty"):
        compiled.bundle(tmp_path / "out")


def test_a_mismatch_raises_and_a_report_can_be_asked_for_instead(user_file, build_root, monkeypatch):
    compiled = atrous.compile(_load(user_file), (torch.randn(1, 3, 17, 19),), name="gated-bad",
                              build_dir=build_root)
    from atrous.pipeline.runner import CompiledModel

    run = CompiledModel.run
    monkeypatch.setattr(CompiledModel, "run", lambda self, inputs: {k: v * 1.01 for k, v in run(self, inputs).items()})
    with pytest.raises(VerificationError, match="outputs differ beyond tolerance"):
        compiled.verify()
    assert not compiled.verify(check=False).ok


def test_a_torch_export_program_brings_its_own_input_names_and_shapes(user_file, tmp_path, build_root, capsys):
    program = torch.export.export(_load(user_file), (torch.randn(1, 3, 24, 22),))
    torch.export.save(program, tmp_path / "gated.pt2")
    result = _cli_json(["verify", str(tmp_path / "gated.pt2"), "--build-dir", str(build_root), "--json"], capsys)
    assert result["ok"] and {c["reference"] for c in result["checks"]} == {"pytorch", "onnxruntime"}
    compiled = atrous.compile(program, (torch.randn(1, 3, 24, 22),), name="gated-program", build_dir=build_root)
    assert compiled.verify().ok


def test_recompiling_under_the_same_name_in_one_process_runs_the_new_build(user_file, build_root):
    """The dynamic loader keeps a library by its path: the second build of build/<name>/host/model.so (new
    shapes) must not run the first one's code."""
    module = _load(user_file)
    for shape in ((1, 3, 14, 16), (1, 3, 20, 18)):
        compiled = atrous.compile(module, (torch.randn(shape),), name="recompiled", build_dir=build_root)
        x = torch.randn(shape)
        with torch.no_grad():
            want = module(x)[0]
        assert torch.allclose(compiled(x)[0], want, rtol=1e-4, atol=1e-5)


def test_bad_user_models_are_refused_with_the_fix(user_file, tmp_path):
    with pytest.raises(InputMismatchError, match="--input-shape x:1x3x512x512"):
        atrous.compile(f"{user_file}:make_model")
    with pytest.raises(AtrousError, match="has no 'missing'"):
        atrous.compile(f"{user_file}:missing", input_shapes={"x": (1, 3, 8, 8)})
    (tmp_path / "not_a_module.py").write_text("def make():\n    return 3\n")
    with pytest.raises(AtrousError, match="returned int, not a torch.nn.Module"):
        atrous.compile(f"{tmp_path / 'not_a_module.py'}:make", input_shapes={"x": (1, 3, 8, 8)})
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(AtrousError, match="torch.export.save"):
        atrous.compile(str(tmp_path / "junk.pt2"))
    with pytest.raises(InputMismatchError, match="example_inputs"):
        atrous.compile(_load(user_file))
    with pytest.raises(InputMismatchError, match=r"example inputs \(x: 1x5x8x8\) failed.*check the input shapes"):
        atrous.compile(f"{user_file}:make_model", input_shapes={"x": (1, 5, 8, 8)})  # 5 channels for a 3-channel conv
    with pytest.raises(AtrousError, match="unknown target"):
        atrous.compile(_load(user_file), (torch.randn(1, 3, 8, 8),), target="rpi9")


def test_listings():
    assert {r["model"] for r in atrous.list_models()} >= {"deeplabv3-mobilenet", "wavenet"}
    assert {"host", "rpi4", "vulkan-desktop"} <= {r["target"] for r in atrous.list_targets()}


@pytest.mark.slow
def test_the_wheel_has_one_top_level_package_and_works_in_a_fresh_venv(tmp_path):
    """``python -m build`` makes a wheel with ``atrous`` alone at the top (no ``pipeline``/``models``/``targets``
    to collide with a user's), its tuning databases and runtime sources inside; installed in a fresh venv (its
    dependencies taken from this one), the console script and the API work from outside the repository."""
    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # setuptools writes build/ and *.egg-info beside the sources: not in the checkout
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "__pycache__", "*.egg-info"))
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                           str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("atrous-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"atrous", wheel.name.split("-py3")[0] + ".dist-info"}
    for needed in ("atrous/api.py", "atrous/pipeline/cli.py", "atrous/pipeline/tuning/tune.py",
                   "atrous/pipeline/devices/cuda_driver_stub.c", "atrous/models/wavenet.py",
                   "atrous/targets/tuning/host/znver4/manifest.json", "atrous/runtime/CMakeLists.txt"):
        assert needed in names, needed

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([venv / "bin" / "python", "-c", purelib], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # TVM, torch... (not atrous)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    listed = subprocess.run([venv / "bin" / "atrous", "list", "targets", "--json"], capture_output=True, text=True,
                            cwd=outside, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "rpi4" in {r["target"] for r in json.loads(listed.stdout)}
    script = textwrap.dedent("""
        import torch, atrous
        from torch import nn
        assert atrous.__file__.startswith(%r), atrous.__file__
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.ReLU()).eval()
        compiled = atrous.compile(net, (torch.randn(1, 3, 15, 16),), build_dir="build")
        print(compiled.verify())
    """) % str(site)
    used = subprocess.run([venv / "bin" / "python", "-c", script], capture_output=True, text=True, cwd=outside,
                          timeout=600)
    assert used.returncode == 0, used.stderr[-3000:]
    assert "vs pytorch" in used.stdout and "ok" in used.stdout
