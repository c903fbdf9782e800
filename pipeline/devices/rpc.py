"""Stage: run a compiled model on a board through TVM's RPC (an atrous-rpc-server, or TVM's own server).

The model library is uploaded to the server's session directory, loaded there, and driven through the Relax VM
from here; inputs and outputs cross the connection as tensors. A server started with a shared secret
(``atrous-rpc-server --secret FILE``) refuses clients without it: ``ATROUS_RPC_SECRET`` (the secret) or
``ATROUS_RPC_SECRET_FILE`` (a file holding it) gives it to this side, which sends it in the handshake after the
key, directly or through a tracker.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np

from atrous.pipeline import artifact as art
from atrous.pipeline.devices.address import RUN_TIMEOUT_S, Device, check_reachable, check_tracker
from atrous.pipeline.errors import DeviceError, first_line
from atrous.pipeline.runner import check_inputs


def secret() -> str:
    """The shared secret for RPC servers that require one ("" when none is configured)."""
    if os.environ.get("ATROUS_RPC_SECRET"):
        return os.environ["ATROUS_RPC_SECRET"].strip()
    path = os.environ.get("ATROUS_RPC_SECRET_FILE")
    if not path:
        return ""
    try:
        text = Path(path).read_text().strip().splitlines()
    except OSError as err:
        raise DeviceError(f"ATROUS_RPC_SECRET_FILE={path}: {err.strerror}") from None
    return text[0].strip() if text else ""


def connect(device: Device):
    """An RPC session to ``device`` (rpc:// or tracker://); raises DeviceError with the fix if unreachable."""
    from tvm import rpc

    shared = secret()
    if device.kind == "rpc":
        check_reachable(device.host, device.port, "the RPC server",
                        f"start it on the device (bundle/bin/atrous-rpc-server --port {device.port}) and check "
                        "the address")
        return _connect(rpc, device.host, device.port, device.key, shared, device.label)
    check_tracker(device)
    tracker = rpc.connect_tracker(device.host, device.port)
    summary = tracker.summary()
    keys = {q.get("key") for q in summary.get("queue_info", {}).values()} | set(summary.get("queue_info", {}))
    if device.key not in keys:
        raise DeviceError(f"the tracker at {device.host}:{device.port} has no device with key '{device.key}' "
                          f"(keys: {', '.join(sorted(k for k in keys if k)) or 'none'}); start "
                          f"atrous-rpc-server --tracker {device.host}:{device.port} --key {device.key} on the board")
    if not shared:
        return tracker.request(device.key, session_timeout=RUN_TIMEOUT_S, max_retry=3)
    # TVM's request() connects with the tracker's match key alone; the secret goes after it, so ask the tracker
    # for the server the same way and connect here
    from tvm.rpc import base

    if tracker._sock is None:
        tracker._connect()
    base.sendjson(tracker._sock, [base.TrackerCode.REQUEST, device.key, "", 1])
    reply = base.recvjson(tracker._sock)
    if reply[0] != base.TrackerCode.SUCCESS:
        raise DeviceError(f"the tracker at {device.host}:{device.port} refused a request for '{device.key}': {reply}")
    host, port, match_key = reply[1]
    return _connect(rpc, host, port, match_key, shared, f"{device.label} (server {host}:{port})")


def _connect(rpc, host: str, port: int, key: str, shared: str, label: str):
    """A session with the server at host:port; the handshake key is the server's key, then the shared secret as
    atrous-rpc-server reads it."""
    try:
        return rpc.connect(host, port, key=f"{key} -secret={shared}" if shared else key,
                           session_timeout=RUN_TIMEOUT_S)
    except Exception as err:
        hint = ("a wrong key or shared secret (ATROUS_RPC_SECRET / ATROUS_RPC_SECRET_FILE), or not a TVM RPC "
                "server" if shared else "a wrong key, a server that requires a shared secret (set "
                "ATROUS_RPC_SECRET_FILE), or not a TVM RPC server")
        raise DeviceError(f"RPC handshake with {label} failed: {first_line(err)} ({hint})") from None


def run_over_rpc(artifact: art.Artifact, device: Device, inputs: dict,
                 repeat: int = 0) -> tuple[dict[str, np.ndarray], list[float]]:
    """Outputs of one run on the remote device, and ``repeat`` per-run times in seconds measured there.

    A server serves one session at a time, so the session is closed before returning: every remote object
    (module, VM, tensors) is dropped and collected, which ends the connection."""
    meta = artifact.meta()
    ordered = check_inputs(meta, inputs)
    session = connect(device)
    try:
        return _run(session, artifact, meta, device, ordered, repeat)
    finally:
        del session
        gc.collect()


def _run(session, artifact: art.Artifact, meta: art.Meta, device: Device, ordered: list, repeat: int):
    import tvm
    from tvm import relax

    try:
        session.upload(str(artifact.library), "model.so")
        module = session.load_module("model.so")
    except Exception as err:
        raise DeviceError(f"{device.label} could not load {artifact.library}: {first_line(err)} (is the model "
                          f"compiled for that device's architecture? it targets {meta.target})") from None
    kind = meta.target_json.get("kind")
    dev = session.cuda(0) if kind == "cuda" else session.vulkan(0) if kind == "vulkan" else session.cpu(0)
    vm = relax.VirtualMachine(module, dev)
    args = [tvm.runtime.tensor(a, dev) for a in ordered]
    # The stateful calls return tuples element by element: a tuple result itself cannot cross RPC.
    vm.set_input("main", *args)
    vm.invoke_stateful("main")
    values = vm.get_outputs("main")
    values = [values] if hasattr(values, "numpy") else list(values)
    outputs = {s.name: v.numpy() for s, v in zip(meta.outputs, values)}
    seconds = []
    if repeat:
        timer = vm.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=0)
        seconds = list(timer(*args).results)
    return outputs, seconds


