"""Where a model runs: the ``--device`` string parsed, and a quick check that a board's server answers.

    (none)                    this machine if the target runs here, else the target's emulator (qemu-aarch64);
                              for a GPU target with this machine's CPU, its bundle's runner here (the GPU's)
    ssh://user@host[:port]    a board over ssh
    rpc://host:port[/key]     an atrous-rpc-server (or TVM's rpc_server) on the board
    tracker://host:port/key   a board registered with a TVM RPC tracker under ``key``
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

from atrous.pipeline.errors import AtrousError, DeviceError

CONNECT_TIMEOUT_S = 10
RUN_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Device:
    kind: str  # local | emulator | bundle | ssh | rpc | tracker
    host: str = ""
    port: int = 0
    user: str = ""
    key: str = ""

    @property
    def label(self) -> str:
        if self.kind in ("local", "emulator"):
            return self.kind
        if self.kind == "bundle":
            return "this machine's GPU"
        return f"{self.kind}://{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    @property
    def emulated(self) -> bool:
        return self.kind == "emulator"


def parse_device(spec: str | None, preset) -> Device:
    """The device a ``--device`` string names (None: this machine or the preset's emulator)."""
    if not spec:
        if preset.runs_here:
            return Device("local")
        if not preset.emulator and preset.runtime_arch == os.uname().machine and preset.family == "cuda":
            return Device("bundle")  # the on-device runtime says clearly if there is no GPU or driver
        if not preset.emulator:
            raise DeviceError(f"target '{preset.name}' does not run on this machine and has no emulator; "
                              "pass --device ssh://user@host or rpc://host:port")
        return Device("emulator")
    url = urlparse(spec)
    defaults = {"ssh": 22, "rpc": 9090, "tracker": 9190}
    if url.scheme not in defaults or not url.hostname:
        raise AtrousError(f"bad --device '{spec}'; use ssh://user@host[:port], rpc://host:port[/key] or "
                          "tracker://host:port/key")
    key = url.path.strip("/")
    if url.scheme == "tracker" and not key:
        raise AtrousError(f"--device {spec}: a tracker device needs its key (tracker://host:port/KEY)")
    return Device(url.scheme, url.hostname, url.port or defaults[url.scheme], url.username or "", key)


def check_reachable(host: str, port: int, what: str, fix: str) -> None:
    """Fail fast, with the fix, when nothing listens at host:port (TVM's client would retry for minutes)."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise DeviceError(f"cannot reach {what} at {host}:{port} ({err}); {fix}") from None


def check_tracker(device: Device) -> None:
    check_reachable(device.host, device.port, "the RPC tracker",
                    f"start one (python -m tvm.exec.rpc_tracker --port {device.port}) and check the address")
