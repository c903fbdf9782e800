"""Stage: Relax -> Relax. The pass list is data: phases concatenated, optional passes as empty Sequentials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm import relax


@dataclass(frozen=True)
class OptimizeOptions:
    """Switches for the graph-level passes. ``database`` is a MetaSchedule work dir to apply (None: untuned)."""

    database: Path | None = None


def inference_passes() -> list:
    return [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
    ]


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


def optimize_passes(options: OptimizeOptions) -> list:
    return (
        # Phase: inference simplification (batch norm and friends to arithmetic, constant folding)
        inference_passes()
        # Phase: lowering to fused TensorIR functions
        + lowering_passes()
        # Phase: schedules from the device's tuning database
        + schedule_passes(options)
    )


def optimize(mod: tvm.IRModule, target, options: OptimizeOptions = OptimizeOptions()) -> tvm.IRModule:
    with target:
        return tvm.transform.Sequential(optimize_passes(options))(mod)
