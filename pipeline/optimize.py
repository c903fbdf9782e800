"""Stage: Relax -> Relax. The pass list is data: phases concatenated, optional passes as empty Sequentials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm import relax

from .passes import DropDeadTaps


@dataclass(frozen=True)
class OptimizeOptions:
    """Switches for the graph-level passes. ``database`` is a MetaSchedule work dir to apply (None: untuned).

    ``drop_dead_taps``: crop conv kernels to the taps that can read real input (exact; see passes/dead_taps.py).
    """

    database: Path | None = None
    drop_dead_taps: bool = True

    def key(self) -> dict:
        """What the artifact fingerprint depends on (the database enters by content, not path)."""
        return {"drop_dead_taps": self.drop_dead_taps}


# Every rewrite that can be switched off: the dilation suite runs with each one alone on.
REWRITES = ("drop_dead_taps",)


def inference_passes() -> list:
    return [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
    ]


def dilation_passes(options: OptimizeOptions) -> list:
    return [DropDeadTaps() if options.drop_dead_taps else tvm.transform.Sequential([])]


def lowering_passes() -> list:
    """Legalize to TensorIR and fuse: the task boundaries tuning databases are keyed by."""
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def schedule_passes(options: OptimizeOptions) -> list:
    if options.database is None:
        return [tvm.transform.Sequential([])]
    return [relax.transform.MetaScheduleApplyDatabase(str(options.database))]


def graph_passes(options: OptimizeOptions) -> list:
    """Everything before scheduling: the module these passes produce is what tuning tasks are extracted from."""
    return (
        # Phase: inference simplification (batch norm and friends to arithmetic, constant folding)
        inference_passes()
        # Phase: dilation-aware rewrites (exact: every output bit unchanged)
        + dilation_passes(options)
        + [relax.transform.FoldConstant()]
        # Phase: lowering to fused TensorIR functions
        + lowering_passes()
    )


def optimize_passes(options: OptimizeOptions) -> list:
    # Phase: schedules from the device's tuning database
    return graph_passes(options) + schedule_passes(options)


def lower(mod: tvm.IRModule, target, options: OptimizeOptions = OptimizeOptions()) -> tvm.IRModule:
    """Relax -> fused TensorIR, unscheduled."""
    with target:
        return tvm.transform.Sequential(graph_passes(options))(mod)


def apply_schedules(mod: tvm.IRModule, target, options: OptimizeOptions) -> tvm.IRModule:
    with target:
        return tvm.transform.Sequential(schedule_passes(options))(mod)


def optimize(mod: tvm.IRModule, target, options: OptimizeOptions = OptimizeOptions()) -> tvm.IRModule:
    return apply_schedules(lower(mod, target, options), target, options)
