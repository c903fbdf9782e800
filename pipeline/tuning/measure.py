"""How tuning builds and measures candidates: MetaSchedule builders and runners for a device preset.

On this machine, candidates are built and timed locally. For a board (``--device tracker://host:port/key``),
they are cross-compiled here into shared libraries with the preset's compiler (the board has none: the stock
export writes a .tar that the device would have to link) and timed there through a TVM RPC tracker, which
MetaSchedule's RPC runner requires; the board runs ``atrous-rpc-server --tracker ... --key ...``.

MetaSchedule's stock ``LocalBuilder`` starts fresh worker processes for every batch and its default build function
imports ``tvm.s_tir.tensor_intrin``, which registers every tensor intrinsic TVM knows and takes ~30 s on this
class of machine: past the builder's timeout, so every candidate "fails". ``build_candidate`` does the same build
without that import (CPU schedules from the default design space use no tensor intrinsics), so a worker is ready
in the ~3 s that ``import tvm`` takes.
"""

from __future__ import annotations

import functools
import os
import tempfile

from tvm.s_tir import meta_schedule as ms

from atrous.pipeline.errors import AtrousError

BUILD_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 30.0


def build_candidate(mod, target, _params):
    """MetaSchedule's default build, minus the tensor-intrinsic import (runs in the builder's worker). CUDA
    candidates get their device code from NVRTC ahead of time, as model builds do (pipeline/devices/cuda.py)."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    if target.kind.name != "cuda":
        return build(mod, target=target)
    from atrous.pipeline.devices.cuda import compiling_for

    with compiling_for(str(target.attrs["arch"]), "tuning candidate"):
        return build(mod, target=target)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def export_shared(mod, compiler: str) -> str:
    """A candidate as a shared library linked by ``compiler`` (runs in the builder's worker)."""
    path = os.path.join(tempfile.mkdtemp(prefix="atrous-candidate-"), "candidate.so")
    mod.export_library(path, cc=compiler)
    return path


def local_builder(workers: int | None = None, compiler: str | None = None) -> ms.builder.LocalBuilder:
    """Candidate builds in parallel on this machine's cores; ``compiler`` links them for another device."""
    export = functools.partial(export_shared, compiler=compiler) if compiler else None
    return ms.builder.LocalBuilder(max_workers=workers or usable_cores(), timeout_sec=BUILD_TIMEOUT_S,
                                   f_build=build_candidate, f_export=export)


def create_session(rpc_config):
    """MetaSchedule's RPC session, opened by atrous's client (devices/rpc.py), which sends the shared secret to
    servers started with --secret (TVM's tracker request sends only the key)."""
    from atrous.pipeline.devices.address import Device
    from atrous.pipeline.devices.rpc import connect

    return connect(Device("tracker", rpc_config.tracker_host, rpc_config.tracker_port, key=rpc_config.tracker_key))


def measurement_for(preset, device: str | None):
    """(builder, runner) for tuning ``preset`` (None, None: MetaSchedule's local ones on this machine): a
    ``--device`` tracker URL measures on that board; an x86_64 GPU preset measures on this machine's GPU, a
    target that does not run here must name its board (emulated timings would tune for qemu)."""
    local_gpu = not device and preset.family == "cuda" and preset.runtime_arch == os.uname().machine
    if local_gpu and not os.path.exists("/dev/nvidiactl"):
        raise AtrousError(f"tuning for '{preset.name}' measures candidates on its GPU, and this machine has no "
                          "NVIDIA GPU driver; tune on the GPU machine, or pass --device tracker://HOST:PORT/KEY")
    if not device and (preset.runs_here or local_gpu):
        return None, None
    if not device:
        raise AtrousError(f"'{preset.name}' does not run here, so tuning must measure on the board: pass "
                          "--device tracker://HOST:PORT/KEY (emulated timings would tune for qemu)")
    from atrous.pipeline.devices.address import parse_device

    return device_measurement(preset, parse_device(device, preset))


def device_measurement(preset, device):
    """(builder, runner) measuring on ``device`` (a devices.address.Device) for ``preset``."""
    from atrous.pipeline.build import linker_for
    from atrous.pipeline.devices.address import check_tracker

    if device.kind != "tracker":
        raise AtrousError("tuning on a board needs a TVM RPC tracker (MetaSchedule measures through one): run "
                          "'python -m tvm.exec.rpc_tracker --port 9190' somewhere reachable, start "
                          "'atrous-rpc-server --tracker HOST:9190 --key KEY' on the board, and pass "
                          "--device tracker://HOST:9190/KEY")
    check_tracker(device)
    config = ms.runner.RPCConfig(tracker_host=device.host, tracker_port=device.port, tracker_key=device.key,
                                 session_timeout_sec=RUN_TIMEOUT_S * 4)
    runner = ms.runner.RPCRunner(config, evaluator_config=evaluator(), max_workers=1, f_create_session=create_session)
    return local_builder(compiler=linker_for(preset)), runner


def evaluator(repeat: int = 3, min_repeat_ms: int = 50, cache_flush: bool = True) -> ms.runner.EvaluatorConfig:
    """Each candidate: ``repeat`` timings of at least ``min_repeat_ms``, CPU caches flushed between them (or
    not: a kernel that reads what the previous one wrote finds it in cache when a model runs)."""
    return ms.runner.EvaluatorConfig(number=1, repeat=repeat, min_repeat_ms=min_repeat_ms,
                                     enable_cpu_cache_flush=cache_flush)


def local_runner(cache_flush: bool = True) -> ms.runner.LocalRunner:
    """Measure on this machine, one candidate at a time (timings must not share the cores)."""
    return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=evaluator(cache_flush=cache_flush))
