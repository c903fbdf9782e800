"""Stage: run a compiled model where its device is, and bring the outputs back.

Where is a ``--device`` string, or nothing (address.py): this machine or the target's emulator, a board over ssh
(the bundle is copied to a temporary directory there and run), or an RPC server on the board (rpc.py, through
TVM's RPC client, directly or through a tracker).

Emulated runs prove correctness only: their timings are labelled as such and never reported as performance.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from atrous.pipeline import artifact as art
from atrous.pipeline.devices.address import CONNECT_TIMEOUT_S, RUN_TIMEOUT_S, Device
from atrous.pipeline.devices.bundle import make_bundle
from atrous.pipeline.errors import DeviceError, ToolchainError
from atrous.pipeline.devices.rpc import run_over_rpc


def run_on_device(artifact: art.Artifact, preset, device: Device, inputs: dict) -> dict[str, np.ndarray]:
    """Run ``artifact`` once on ``inputs`` (name -> array) on ``device``; its outputs by name."""
    if device.kind == "local":
        from atrous.pipeline.runner import CompiledModel

        return CompiledModel(artifact).run(inputs)
    if device.kind in ("rpc", "tracker"):
        return run_over_rpc(artifact, device, inputs)[0]
    bundle = make_bundle(artifact, preset.tolerance)
    if device.kind == "emulator":
        return _run_bundle(bundle, artifact.meta(), emulator_command(preset), inputs,
                           f"{preset.emulator[0]} (emulated {preset.name})")
    if device.kind == "bundle":
        return _run_bundle(bundle, artifact.meta(), [], inputs, "this machine")
    return _run_ssh(bundle, artifact.meta(), device, inputs)


def emulator_command(preset) -> list[str]:
    """The emulator prefix, after checking it and its sysroot are installed."""
    tool = preset.emulator[0]
    packages = " ".join(preset.emulator_packages)
    if shutil.which(tool) is None:
        raise ToolchainError(f"running '{preset.name}' binaries here needs '{tool}'; install it with: "
                             f"sudo apt-get install {packages}")
    for flag, value in zip(preset.emulator, preset.emulator[1:]):
        if flag == "-L" and not Path(value).is_dir():
            raise ToolchainError(f"the emulator needs the target's libraries in {value}; install them with: "
                                 f"sudo apt-get install {packages}")
    return list(preset.emulator)


def _runner_args(meta: art.Meta, inputs: dict, work: Path) -> list[str]:
    args = []
    for i, spec in enumerate(meta.inputs):
        np.save(work / f"input{i}.npy", np.ascontiguousarray(inputs[spec.name]))
        args += ["--input", f"{spec.name}={work / f'input{i}.npy'}"]
    return args + ["--output-dir", str(work)]


def _read_outputs(meta: art.Meta, work: Path) -> dict[str, np.ndarray]:
    return {s.name: np.load(work / f"output{i}.npy") for i, s in enumerate(meta.outputs)}


def _check(done: subprocess.CompletedProcess, where: str) -> None:
    if done.returncode != 0:
        text = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
        raise DeviceError(f"the model failed on {where}: {text[-1]}")


def _run_bundle(bundle: Path, meta: art.Meta, prefix: list[str], inputs: dict, where: str) -> dict[str, np.ndarray]:
    """Run the bundle's runner here (``prefix``: the emulator, or nothing) on ``inputs``."""
    with tempfile.TemporaryDirectory(prefix="atrous-run-") as tmp:
        work = Path(tmp)
        command = prefix + [str(bundle / "bin" / "atrous-run"), str(bundle / "model.so")]
        done = subprocess.run(command + _runner_args(meta, inputs, work), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)
        _check(done, where)
        return _read_outputs(meta, work)


def _ssh_base(device: Device) -> list[str]:
    return ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-p", str(device.port)]


def _run_ssh(bundle: Path, meta: art.Meta, device: Device, inputs: dict) -> dict[str, np.ndarray]:
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise ToolchainError(f"--device ssh:// needs '{tool}'; install it with: sudo apt-get install "
                                 "openssh-client")
    target = f"{device.user + '@' if device.user else ''}{device.host}"
    ssh = ["ssh", *_ssh_base(device), target]
    made = subprocess.run(ssh + ["mktemp -d /tmp/atrous-XXXXXX"], capture_output=True, text=True,
                          timeout=CONNECT_TIMEOUT_S * 3)
    if made.returncode != 0:
        raise DeviceError(f"cannot reach {device.label} over ssh: {made.stderr.strip() or 'ssh failed'}; check "
                          "the address and that key-based login works (ssh-copy-id)")
    remote = made.stdout.strip()
    try:
        with tempfile.TemporaryDirectory(prefix="atrous-ssh-") as tmp:
            work = Path(tmp)
            args = _runner_args(meta, inputs, work)
            scp = ["scp", "-q", "-r", "-o", "BatchMode=yes", "-P", str(device.port)]
            _check(subprocess.run(scp + [str(bundle), *map(str, work.glob("input*.npy")), f"{target}:{remote}/"],
                                  capture_output=True, text=True), f"{device.label} (copying the bundle)")
            remote_args = [a.replace(str(work), remote) for a in args[:-1]] + [remote]
            run = f"{remote}/bundle/bin/atrous-run {remote}/bundle/model.so " + " ".join(map(shlex.quote,
                                                                                               remote_args))
            _check(subprocess.run(ssh + [run], capture_output=True, text=True, timeout=RUN_TIMEOUT_S),
                   device.label)
            outputs = [f"{target}:{remote}/output{i}.npy" for i in range(len(meta.outputs))]
            _check(subprocess.run(scp + outputs + [str(work)], capture_output=True, text=True),
                   f"{device.label} (fetching outputs)")
            return _read_outputs(meta, work)
    finally:
        subprocess.run(ssh + [f"rm -rf {shlex.quote(remote)}"], capture_output=True, timeout=CONNECT_TIMEOUT_S * 3)
