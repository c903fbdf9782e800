"""The on-device runtime library (runtime/): its C API, the runner, bundles, and the RPC server, on this machine
and on aarch64 under qemu, with the errors a user meets (wrong file, wrong architecture, wrong shape,
unreachable device, missing tools)."""

import os
import signal
import socket
import subprocess
import tarfile
import time

import numpy as np
import pytest
import torch

from atrous import targets
from atrous.pipeline import errors, source
from atrous.pipeline.devices.bundle import make_bundle
from atrous.pipeline.devices.address import parse_device
from atrous.pipeline.interface import CompileArgs, compile_model, verify_model
from atrous.pipeline.devices.rpc import run_over_rpc
from atrous.pipeline.devices.runtime_build import build_runtime, host_arch

QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]


class TwoInTwoOut(torch.nn.Module):
    """Two inputs and two outputs, so names and order through the C API matter."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=2, dilation=2)

    def forward(self, image, scale):
        features = torch.relu(self.conv(image))
        return features * scale, features.mean(dim=(2, 3))


@pytest.fixture(scope="module")
def model_source():
    torch.manual_seed(3)
    module = TwoInTwoOut().eval()
    rng = np.random.default_rng(3)
    inputs = {"image": rng.standard_normal((1, 3, 12, 12)).astype("float32"),
              "scale": rng.standard_normal((1, 6, 1, 1)).astype("float32")}
    return source.from_torch("two", lambda: module, inputs, ("scaled", "pooled"))


@pytest.fixture(scope="module")
def host_runtime(build_root):
    return build_runtime(host_arch(), build_root)


@pytest.fixture(scope="module")
def arm_runtime(build_root):
    return build_runtime("aarch64", build_root)


@pytest.fixture(scope="module")
def host_model(model_source, build_root):
    return compile_model(CompileArgs(model_source, targets.get_target("host"), build_root, tuned=False))


@pytest.fixture(scope="module")
def arm_model(model_source, build_root):
    return compile_model(CompileArgs(model_source, targets.get_target("rpi4"), build_root))


def _run(command, **kwargs):
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)


def _save_inputs(artifact, directory):
    inputs, expected = artifact.load_golden()
    for name, value in {**inputs, **expected}.items():
        np.save(directory / f"{name}.npy", value)
    return inputs, expected


def test_runtime_builds_for_both_architectures_with_the_wheels_runtime(host_runtime, arm_runtime):
    for runtime, machine in ((host_runtime, "x86-64" if host_arch() == "x86_64" else "aarch64"),
                             (arm_runtime, "aarch64")):
        sizes = runtime.size_bytes()
        assert set(sizes) == {"bin/atrous-run", "bin/atrous-rpc-server", "lib/libatrous_runtime.so",
                              "lib/libtvm_runtime.so", "lib/libtvm_runtime_extra.so", "lib/libtvm_ffi.so",
                              "lib/libtvm_runtime_cuda.so", "lib/libcudart.so.13", "lib/libatrous_vulkan.so"}
        print(runtime.arch, {k: f"{v / 1e6:.2f} MB" for k, v in sizes.items()})
        for path in (runtime.runner, runtime.rpc_server, runtime.lib / "libtvm_runtime.so",
                     runtime.lib / "libtvm_runtime_cuda.so", runtime.lib / "libcudart.so.13",
                     runtime.lib / "libatrous_vulkan.so"):
            header = _run(["file", "-L", path]).stdout if os.path.exists("/usr/bin/file") else ""
            assert not header or machine.replace("-", "") in header.replace("-", "").lower(), header
        needed = _run(["readelf", "-d", runtime.runner]).stdout
        assert "libtvm_runtime.so" in needed and "$ORIGIN" in needed  # found through RPATH, no LD_LIBRARY_PATH
    assert build_runtime("aarch64", arm_runtime.root.parent.parent).root == arm_runtime.root  # reused


def test_runner_info_run_check_and_timing_on_the_host(host_model, host_runtime, tmp_path):
    inputs, expected = _save_inputs(host_model, tmp_path)
    library = host_model.library
    info = _run([host_runtime.runner, library, "--info"])
    assert info.returncode == 0, info.stderr
    assert "input  image            float32[1, 3, 12, 12]" in info.stdout
    assert "output pooled           float32[1, 6]" in info.stdout
    # every physical core unless TVM_NUM_THREADS says otherwise (TVM alone would take half of them on x86)
    from atrous.pipeline.threads import physical_cores

    plain = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    assert f"threads {physical_cores()}\n" in _run([host_runtime.runner, library, "--info"], env=plain).stdout
    assert "threads 1\n" in _run([host_runtime.runner, library, "--info"], env={**plain, "TVM_NUM_THREADS": "1"}).stdout
    done = _run([host_runtime.runner, library, "--input", f"scale={tmp_path / 'scale.npy'}",
                 "--input", f"image={tmp_path / 'image.npy'}", "--expect", f"scaled={tmp_path / 'scaled.npy'}",
                 "--expect", f"pooled={tmp_path / 'pooled.npy'}", "--output-dir", tmp_path, "--repeat", "3"])
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" ok") == 2 and "latency: median" in done.stdout
    for i, name in enumerate(("scaled", "pooled")):
        np.testing.assert_allclose(np.load(tmp_path / f"output{i}.npy"), expected[name], rtol=1e-5, atol=1e-5)
    # the check fails when the expectation is wrong
    np.save(tmp_path / "wrong.npy", expected["pooled"] + 0.01)
    wrong = _run([host_runtime.runner, library, "--input", tmp_path / "image.npy", "--input", tmp_path / "scale.npy",
                  "--expect", f"pooled={tmp_path / 'wrong.npy'}"])
    assert wrong.returncode == 1 and "MISMATCH" in wrong.stdout


def test_runner_refuses_bad_input_with_a_reason(host_model, arm_model, host_runtime, tmp_path):
    _save_inputs(host_model, tmp_path)
    runner, library = host_runtime.runner, host_model.library
    np.save(tmp_path / "small.npy", np.zeros((1, 3, 10, 12), "float32"))
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (x1, 3), }\n"
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    (tmp_path / "short.npy").write_bytes((tmp_path / "small.npy").read_bytes()[:200])
    for name, shape in (("huge", b"(99999999999, 3, 257)"), ("overflow", b"(999999999999, 999999999999, 99999)")):
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + b", }\n"
        (tmp_path / f"{name}.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    (tmp_path / "truncated.so").write_bytes(library.read_bytes()[:8192])  # a copy cut short (SIGBUS once)
    cases = [
        ([tmp_path / "truncated.so", "--info"], "truncated: the file is 8192 bytes"),
        ([library, "--input", tmp_path / "small.npy", "--input", tmp_path / "scale.npy"],
         r"compiled for float32[1, 3, 12, 12]"),
        ([library, "--input", tmp_path / "image.npy"], "takes 2 input(s), got 1"),
        ([library, "--input", f"nope={tmp_path / 'image.npy'}", "--input", tmp_path / "scale.npy"],
         "no input called 'nope'; the model's inputs: image, scale"),
        ([tmp_path / "image.npy"], "not a loadable model library"),
        ([arm_model.library, "--info"], "built for aarch64, this runtime runs on x86_64"),  # wrong architecture
        ([tmp_path / "missing.so"], "cannot read"),
        ([library, "--frobnicate"], "unknown option --frobnicate"),
        ([library, "--input", tmp_path / "bad.npy", "--input", tmp_path / "scale.npy"], "malformed shape"),
        ([library, "--input", tmp_path / "short.npy", "--input", tmp_path / "scale.npy"], "shorter than its shape"),
        # sizes a header declares are checked against the file before anything is allocated (no bad_alloc)
        ([library, "--input", tmp_path / "huge.npy", "--input", tmp_path / "scale.npy"],
         "file shorter than its shape says (308399999996916 bytes of data declared, 0 present)"),
        ([library, "--input", tmp_path / "overflow.npy", "--input", tmp_path / "scale.npy"], "overflows"),
    ]
    for args, message in cases:
        done = _run([runner, *args])
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def _capi(command_prefix, runtime, artifact, tmp_path):
    inputs, expected = artifact.load_golden()
    raw = tmp_path / "inputs.raw"
    raw.write_bytes(b"".join(np.ascontiguousarray(inputs[s.name]).tobytes() for s in artifact.meta().inputs))
    done = _run([*command_prefix, runtime.capi_test, artifact.library, raw, tmp_path / "outputs.raw",
                 artifact.golden_inputs])
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failure(s)" in done.stdout and done.stdout.count("ok: ") >= 9
    data = (tmp_path / "outputs.raw").read_bytes()
    offset = 0
    for spec in artifact.meta().outputs:
        want = expected[spec.name]
        got = np.frombuffer(data[offset:offset + want.nbytes], want.dtype).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        offset += want.nbytes
    assert offset == len(data)


def test_c_api_on_the_host(host_model, host_runtime, tmp_path):
    _capi([], host_runtime, host_model, tmp_path)


def test_c_api_on_aarch64_under_qemu(arm_model, arm_runtime, tmp_path):
    _capi(QEMU, arm_runtime, arm_model, tmp_path)


class Dilated(torch.nn.Module):
    """A second model for the threads test: dilated convs and a residual."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(4, 16, 3, padding=2, dilation=2)
        self.b = torch.nn.Conv2d(16, 4, 3, padding=4, dilation=4)

    def forward(self, x):
        return x + self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def second_host_model(build_root):
    torch.manual_seed(5)
    module = Dilated().eval()
    inputs = {"x": np.random.default_rng(5).standard_normal((1, 4, 40, 44)).astype("float32")}
    src = source.from_torch("dilated", lambda: module, inputs, ("y",))
    return compile_model(CompileArgs(src, targets.get_target("host"), build_root, tuned=False))


def _threads(runtime, first, second, tmp_path, rounds, env=None):
    paths = []
    for i, artifact in enumerate((first, second)):
        inputs, _ = artifact.load_golden()
        raw = tmp_path / f"inputs{i}.raw"
        raw.write_bytes(b"".join(np.ascontiguousarray(inputs[s.name]).tobytes() for s in artifact.meta().inputs))
        paths += [artifact.library, raw]
    return _run([runtime.threads_test, *paths, rounds], env=env)


def test_two_models_run_from_two_threads_at_once_give_what_each_gives_alone(host_model, second_host_model,
                                                                            host_runtime, tmp_path):
    done = _threads(host_runtime, host_model, second_host_model, tmp_path, 50)
    print(done.stdout)
    assert done.returncode == 0 and done.stdout.count("same outputs as alone") == 2, done.stdout + done.stderr


@pytest.mark.slow
def test_the_same_under_thread_sanitizer(host_model, second_host_model, build_root, tmp_path):
    """The runtime built with -fsanitize=thread (the TVM runtime itself is the wheel's, not instrumented: this
    checks the C API's own state: errors, the thread-count default, loading)."""
    tsan = build_runtime(host_arch(), build_root, sanitize="thread")
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1 exitcode=66 report_signal_unsafe=0"}
    done = _threads(tsan, host_model, second_host_model, tmp_path, 5, env=env)
    print(done.stdout, done.stderr[-3000:])
    assert "ThreadSanitizer" not in done.stderr and done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("same outputs as alone") == 2


def test_host_bundle_runs_its_own_check_script(host_model, tmp_path):
    bundle = make_bundle(host_model, targets.get_target("host").tolerance)
    done = _run([bundle / "run.sh", "--repeat", "2"])
    print(done.stdout)
    assert done.returncode == 0 and done.stdout.count(" ok") == 2, done.stdout + done.stderr
    with tarfile.open(host_model.root / "bundle.tar.gz") as tar:
        names = set(tar.getnames())
    for part in ("model.so", "run.sh", "README.txt", "bin/atrous-run", "bin/atrous-rpc-server",
                 "lib/libtvm_runtime.so", "lib/libtvm_ffi.so", "lib/libatrous_runtime.so", "golden/input1.npy",
                 "golden/expected1.npy", "include/atrous/atrous.h"):
        assert f"two-host/{part}" in names, part
    # unpacked elsewhere it still runs: nothing points back into the build tree
    with tarfile.open(host_model.root / "bundle.tar.gz") as tar:
        tar.extractall(tmp_path, filter="tar")
    moved = _run([tmp_path / "two-host" / "run.sh"], env={"PATH": "/usr/bin:/bin"})
    assert moved.returncode == 0, moved.stdout + moved.stderr
    # a damaged copy is named before anything runs: a truncated model.so, a missing golden file
    library = tmp_path / "two-host" / "model.so"
    library.write_bytes(library.read_bytes()[:4096])
    (tmp_path / "two-host" / "golden" / "input0.npy").unlink()
    damaged = _run([tmp_path / "two-host" / "run.sh"], env={"PATH": "/usr/bin:/bin"})
    assert damaged.returncode == 2 and "damaged or incomplete" in damaged.stderr, damaged.stderr
    assert "model.so: FAILED" in damaged.stderr and "golden/input0.npy" in damaged.stderr
    assert "MISMATCH" not in damaged.stdout and "ok" not in damaged.stdout


def test_rpi4_model_verifies_under_qemu_with_both_references(arm_model):
    result = verify_model(arm_model, targets.get_target("rpi4"))
    assert result.ok and result.device == "emulator"
    assert {c.reference for c in result.checks} == {"pytorch", "onnxruntime"}
    assert any("emulated" in n and "not performance numbers" in n for n in result.notes)
    assert "aarch64" in _run(["file", arm_model.library]).stdout or not os.path.exists("/usr/bin/file")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port, process, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, f"{process.args[0]} exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listening on {port}")


def _server(runtime, *args, prefix=()):
    port = _free_port()
    server = subprocess.Popen([*prefix, str(runtime.rpc_server), "--port", str(port), *map(str, args)],
                              stderr=subprocess.PIPE, text=True)
    return port, server


def _stop(server) -> str:
    server.send_signal(signal.SIGTERM)
    try:
        return server.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        server.kill()
        return server.communicate()[1]


def test_rpc_server_listens_on_loopback_unless_told_and_warns_when_told(host_runtime):
    port, server = _server(host_runtime)
    try:
        _wait_listening(port, server)
        here = [a for a in socket.gethostbyname_ex(socket.gethostname())[2] if not a.startswith("127.")]
        for address in here:  # another address of this machine: nothing answers there
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2).close()
    finally:
        log = _stop(server)
    assert f"listening on 127.0.0.1:{port}" in log and "WARNING" not in log
    port, server = _server(host_runtime, "--host", "0.0.0.0")
    try:
        _wait_listening(port, server)
    finally:
        log = _stop(server)
    assert "WARNING: listening on 0.0.0.0" in log and "--secret FILE" in log


def test_rpc_server_with_a_secret_refuses_clients_without_it_and_goes_on_serving(host_model, host_runtime,
                                                                                tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-for-this-test\n")
    secret.chmod(0o644)
    port, server = _server(host_runtime, "--secret", secret)
    assert server.wait(timeout=30) == 2 and "readable by other users" in server.stderr.read()
    secret.chmod(0o600)
    port, server = _server(host_runtime, "--secret", secret, "--host", "0.0.0.0")
    device = parse_device(f"rpc://127.0.0.1:{port}", targets.get_target("host"))
    inputs, expected = host_model.load_golden()
    try:
        _wait_listening(port, server)
        silent = socket.create_connection(("127.0.0.1", port))  # says nothing: dropped after the 10 s handshake limit
        monkeypatch.delenv("ATROUS_RPC_SECRET", raising=False)
        monkeypatch.delenv("ATROUS_RPC_SECRET_FILE", raising=False)
        with pytest.raises(errors.DeviceError, match="handshake .* failed.*ATROUS_RPC_SECRET_FILE"):
            run_over_rpc(host_model, device, inputs)
        monkeypatch.setenv("ATROUS_RPC_SECRET", "s3cr3t-for-this-tesT")
        with pytest.raises(errors.DeviceError, match="wrong key or shared secret"):
            run_over_rpc(host_model, device, inputs)
        monkeypatch.delenv("ATROUS_RPC_SECRET")
        monkeypatch.setenv("ATROUS_RPC_SECRET_FILE", str(secret))
        outputs, _ = run_over_rpc(host_model, device, inputs)
        silent.close()
    finally:
        log = _stop(server)
    for name, want in expected.items():
        np.testing.assert_allclose(outputs[name], want, rtol=1e-5, atol=1e-5)
    assert "shared secret required" in log and "clients must present the shared secret" in log
    assert "refused a client without the shared secret" in log and "refused a client with a wrong shared secret" in log
    assert log.count("session started") == 1


@pytest.fixture
def arm_rpc_server(arm_runtime):
    port = _free_port()
    server = subprocess.Popen([*QEMU, str(arm_runtime.rpc_server), "--host", "127.0.0.1", "--port", str(port)],
                              stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, server)
        yield port
    finally:
        server.kill()
        server.wait()


def test_rpc_round_trip_to_the_emulated_aarch64_server(arm_model, arm_rpc_server):
    preset = targets.get_target("rpi4")
    inputs, expected = arm_model.load_golden()
    outputs, seconds = run_over_rpc(arm_model, parse_device(f"rpc://127.0.0.1:{arm_rpc_server}", preset), inputs,
                                    repeat=2)
    for name, want in expected.items():
        np.testing.assert_allclose(outputs[name], want, rtol=1e-5, atol=1e-5)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    # a second session on the same server, through verify
    result = verify_model(arm_model, preset, device=f"rpc://127.0.0.1:{arm_rpc_server}")
    assert result.ok and result.device == f"rpc://127.0.0.1:{arm_rpc_server}", result.checks


def test_rpc_server_refuses_a_model_for_another_architecture(host_model, arm_rpc_server):
    inputs, _ = host_model.load_golden()
    with pytest.raises(errors.DeviceError, match="could not load .*compiled for that device's architecture"):
        run_over_rpc(host_model, parse_device(f"rpc://127.0.0.1:{arm_rpc_server}", targets.get_target("rpi4")),
                     inputs)


@pytest.fixture(scope="module")
def arm_tracker(arm_runtime):
    """A TVM RPC tracker with the emulated aarch64 server registered under key 'pi'; yields the tracker port."""
    import sys

    tracker_port, server_port = _free_port(), _free_port()
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                                str(tracker_port), "--port-end", str(tracker_port + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = None
    try:
        _wait_listening(tracker_port, tracker)
        server = subprocess.Popen([*QEMU, str(arm_runtime.rpc_server), "--host", "127.0.0.1", "--port",
                                   str(server_port), "--tracker", f"127.0.0.1:{tracker_port}", "--key", "pi"],
                                  stderr=subprocess.DEVNULL)
        _wait_listening(server_port, server)
        yield tracker_port
    finally:
        for process in (server, tracker):
            if process is not None:  # the tracker serves from a child process: stop its whole group
                os.killpg(process.pid, signal.SIGKILL) if process is tracker else process.kill()
                process.wait()


def test_rpc_through_a_tvm_tracker(arm_model, arm_tracker):
    preset = targets.get_target("rpi4")
    with pytest.raises(errors.DeviceError, match="no device with key 'rpi5'"):
        verify_model(arm_model, preset, device=f"tracker://127.0.0.1:{arm_tracker}/rpi5")
    deadline = time.time() + 30  # the server announces itself right after it starts listening
    while True:
        try:
            result = verify_model(arm_model, preset, device=f"tracker://127.0.0.1:{arm_tracker}/pi")
            break
        except errors.DeviceError:
            if time.time() > deadline:
                raise
            time.sleep(1)
    assert result.ok, result.checks


def test_tuning_measures_on_the_board_through_the_tracker(arm_tracker, tmp_path):
    """Candidates are cross-compiled here and timed by the aarch64 server; the records then compile and verify.
    (Emulated timings make a meaningless database: this proves the flow, not a schedule.)"""
    from atrous.pipeline.tuning.measure import device_measurement
    from atrous.pipeline.tuning.tune import TuneArgs, tune_model

    torch.manual_seed(4)
    conv = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU()).eval()  # one kernel
    model_source = source.from_torch("conv", lambda: conv, {"x": np.ones((1, 4, 8, 8), "float32")})
    preset = targets.get_target("rpi4")
    builder, runner = device_measurement(preset, parse_device(f"tracker://127.0.0.1:{arm_tracker}/pi", preset))
    report = tune_model(TuneArgs(model_source, preset, 2, database=tmp_path / "db", runner=runner,
                                 builder=builder, strategy="replay-trace"), progress=False)
    print(report.table())
    assert report.new_trials > 0 and report.tasks
    assert all(t.best_s and t.best_s > 0 for t in report.tasks), report.table()
    from atrous.pipeline.optimize import OptimizeOptions

    tuned = compile_model(CompileArgs(model_source, preset, tmp_path / "build",
                                      options=OptimizeOptions(database=tmp_path / "db")))
    meta = tuned.meta()
    assert meta.tuned_tasks == meta.total_tasks > 0
    assert verify_model(tuned, preset).ok
    with pytest.raises(errors.AtrousError, match="needs a TVM RPC tracker"):
        device_measurement(preset, parse_device("rpc://127.0.0.1:9090", preset))


def test_unreachable_or_wrong_devices_fail_fast_with_the_fix(arm_model, host_model):
    preset = targets.get_target("rpi4")
    inputs, _ = arm_model.load_golden()
    port = _free_port()  # nothing listens there
    start = time.time()
    with pytest.raises(errors.DeviceError, match=f"cannot reach the RPC server at 127.0.0.1:{port}.*atrous-rpc-server"):
        run_over_rpc(arm_model, parse_device(f"rpc://127.0.0.1:{port}", preset), inputs)
    with pytest.raises(errors.DeviceError, match="cannot reach the RPC tracker.*rpc_tracker"):
        run_over_rpc(arm_model, parse_device(f"tracker://127.0.0.1:{port}/rpi4", preset), inputs)
    with pytest.raises(errors.DeviceError, match=f"cannot reach ssh://pi@127.0.0.1:{port} over ssh"):
        verify_model(arm_model, preset, device=f"ssh://pi@127.0.0.1:{port}")
    assert time.time() - start < 30
    with pytest.raises(errors.AtrousError, match="bad --device"):
        parse_device("ftp://board", preset)
    with pytest.raises(errors.AtrousError, match="needs its key"):
        parse_device("tracker://127.0.0.1:9190", preset)
    with pytest.raises(errors.ToolchainError, match="apt-get install qemu-user"):
        verify_model(arm_model, preset.replace(emulator=("qemu-nowhere",)))
    with pytest.raises(errors.ToolchainError, match="/nowhere.*apt-get install"):
        verify_model(arm_model, preset.replace(emulator=("qemu-aarch64", "-L", "/nowhere")))


def test_cli_on_a_board_target(build_root, arm_runtime, capsys):
    import json

    from atrous.pipeline.cli import main

    common = ["wavenet", "--preset", "tiny", "--target", "rpi4", "--build-dir", str(build_root)]
    assert main(["verify", *common]) == 0
    out = capsys.readouterr().out
    assert "run on emulator" in out and "rel-L2" in out and "bundle: " in out and "not performance numbers" in out
    assert main(["bench", *common]) == 2
    assert "cannot run 'rpi4' natively" in capsys.readouterr().err
    assert main(["tune", *common[:-2], "--trials", "1"]) == 2
    assert "--device tracker://" in capsys.readouterr().err
    assert main(["verify", *common, "--device", "rpc://127.0.0.1:1"]) == 3
    assert "cannot reach the RPC server" in capsys.readouterr().err
    assert main(["runtime", "--arch", "aarch64", "--build-dir", str(build_root), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["arch"] == "aarch64" and built["root"] == str(arm_runtime.root) and built["bytes"]["bin/atrous-run"]
