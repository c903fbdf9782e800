"""Stage: Relax -> Relax. The pass list is data: phases concatenated, optional passes as empty Sequentials."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm import relax

from atrous.pipeline.tuning.algorithm_table import Table
from atrous.pipeline.tuning.database import read_database
from atrous.pipeline.passes import (BlockChannels, DropDeadTaps, FrontendOps, Legalize, MergeSummedConvs, PadToTiles,
                                    PartitionBorders, SeparableResize, TransposedConvPhases, Winograd)
from atrous.pipeline.passes.half_precision import HalfPrecision
from atrous.pipeline.passes.int8_kernels import Int8Kernels
from atrous.pipeline.passes.int8_layout import Int8ChannelsLast
from atrous.pipeline.passes.integer_convs import IntegerConvs
from atrous.pipeline.passes.winograd import threshold
from atrous.pipeline.schedules.narrow import NarrowCPUKernels


@dataclass(frozen=True)
class OptimizeOptions:
    """Switches for the graph-level passes. ``database`` is a MetaSchedule work dir to apply (None: untuned).

    ``drop_dead_taps``: crop conv kernels to the taps that can read real input (exact; see passes/dead_taps.py).
    ``partition_borders``: split dilated convs into output bands over their live taps (exact; passes/border_bands.py).
    ``transposed_phases``: transposed convs as one dense conv over their output phases (exact;
    passes/transposed_phases.py).
    ``pad_to_tiles``: on CPU targets, pad dense conv rows and output channels to whole register tiles and crop
    back (exact; passes/tile_padding.py).
    ``winograd``: on CPU targets, 3x3 convs (dilated ones by phase decomposition) as Winograd F(m x m, 3 x 3)
    (not bit-exact; passes/winograd.py). "auto": per conv, as the database measured it (algorithms.py), else
    by the cost model there; "2" or "4": every conv with at least ``winograd_min_channels`` in and out, with
    that m; "off". In the blocked layout the chosen convs become blocked Winograd (passes/blocked_winograd.py,
    with its own cost model in algorithms.py); in NCHW, the NCHW rewrite of passes/winograd.py.
    ``merge_summed_convs``: a sum of three or more 1x1 convs over different inputs as one conv over their
    concatenation (WaveNet's skips; the same products in another order; passes/summed_convs.py).
    ``separable_resize``: on CPU targets, bilinear resizes as a width pass and a row-blending height pass with
    precomputed taps (the same lerps; passes/separable_resize.py).
    ``fast_math``: on CPU targets, fp32 tanh and sigmoid as TOPI's vectorisable approximations (not bit-exact,
    errors ~3e-7; passes/fast_math.py).
    ``pixel_conv``: on CPU targets, pointwise convs that the pixel-vectorised schedule takes keep their odd rows
    (no tile padding), get int32 indices and that schedule (schedules/pixel_conv.py); off: the channel-vectorised
    schedule of every other dense conv.
    ``blocked_layout``: on CPU targets, activations in the blocked channel layout NCHW{c}c between convs, convs
    register-blocked in it (exact but for the order of each sum; passes/blocked_layout.py,
    schedules/blocked_conv.py); off: NCHW throughout.
    ``default_schedules``: schedule kernels the database does not cover with the rules in schedules/.
    ``integer_convs``: in QDQ (int8) graphs, dequantize -> conv as integer convs (passes/integer_convs.py) with
    int8 kernels (passes/int8_kernels.py). "auto": on CPUs with an int8 dot-product instruction (AVX-512 VNNI;
    schedules/int8_conv.py), where they beat fp32; elsewhere the float arithmetic on dequantized values that
    the graph spells, in the fp32 kernels (int8 kernels without the instruction ran 5.7x slower than fp32 on
    DeepLabV3-MobileNet's AVX2 build); "on": integer convs on any CPU target (exact; the vectorised loop
    without the instruction); "off": never.
    ``precision``: "fp16": on GPU targets, activations and weights in float16 (convs sum in float32), float32 at
    the model's inputs and outputs (passes/half_precision.py); "fp32" and "int8" (a QDQ graph, lowered by
    ``integer_convs``) leave the float arithmetic as the graph spells it.
    """

    database: Path | None = None
    drop_dead_taps: bool = True
    partition_borders: bool = True
    transposed_phases: bool = True
    pad_to_tiles: bool = True
    winograd: str = "auto"
    winograd_min_channels: int = 128
    merge_summed_convs: bool = True
    separable_resize: bool = True
    fast_math: bool = True
    pixel_conv: bool = True
    blocked_layout: bool = True
    default_schedules: bool = True
    integer_convs: str = "auto"
    precision: str = "fp32"

    def key(self) -> dict:
        """What the artifact fingerprint depends on (the database enters by content, not path)."""
        return {"drop_dead_taps": self.drop_dead_taps, "partition_borders": self.partition_borders,
                "transposed_phases": self.transposed_phases,
                "pad_to_tiles": self.pad_to_tiles, "winograd": self.winograd,
                "winograd_min_channels": self.winograd_min_channels, "fast_math": self.fast_math,
                "separable_resize": self.separable_resize, "merge_summed_convs": self.merge_summed_convs,
                "pixel_conv": self.pixel_conv, "blocked_layout": self.blocked_layout,
                "default_schedules": self.default_schedules, "integer_convs": self.integer_convs,
                "precision": self.precision}


# Every rewrite that can be switched off, as (off, on) values: the dilation suite runs with each one alone on.
REWRITES = {"drop_dead_taps": (False, True), "partition_borders": (False, True), "transposed_phases": (False, True),
            "pad_to_tiles": (False, True), "winograd": ("off", "4"), "blocked_layout": (False, True)}


def rewrites_only(*names: str, **overrides) -> OptimizeOptions:
    """Options with every rewrite off but ``names``."""
    values = {name: (on if name in names else off) for name, (off, on) in REWRITES.items()}
    return OptimizeOptions(**{**values, **overrides})


def inference_passes(options: OptimizeOptions) -> list:
    return [
        # QDQ graphs: dequantize -> conv as integer convs, before FoldConstant folds the int8 weights to float
        IntegerConvs(options.integer_convs),
        # the importer's Clip and Pad kernels as Relax ops again, and resizes TOPI cannot lower rewritten: before
        # FoldConstant, which legalizes every op it meets (passes/frontend_ops.py)
        FrontendOps(),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
    ]


def dilation_passes(options: OptimizeOptions) -> list:
    """In the blocked layout, border bands are BlockChannels' (one kernel per conv, its weight stored once)."""
    off = tvm.transform.Sequential([])
    return [
        DropDeadTaps() if options.drop_dead_taps else off,
        PartitionBorders() if options.partition_borders and not options.blocked_layout else off,
        TransposedConvPhases() if options.transposed_phases else off,
    ]


WINOGRAD = ("auto", "off", "2", "4")


def winograd_choice(options: OptimizeOptions):
    """Which Winograd tile each 3x3 conv gets (passes/winograd.py ``Choose``), or None for "off"."""
    if options.winograd not in WINOGRAD:
        raise ValueError(f"winograd={options.winograd!r} is not one of {WINOGRAD}")
    if options.winograd == "off":
        return None
    if options.winograd == "auto":
        return Table.load(options.database).chooser(blocked=options.blocked_layout)
    return threshold(int(options.winograd), options.winograd_min_channels)


def algorithm_passes(options: OptimizeOptions) -> list:
    """Fewer multiplications by another algorithm (CPU targets; rounds differently from the direct sum). In the
    blocked layout, BlockChannels writes the chosen convs as blocked Winograd instead (tiling_passes)."""
    choose = winograd_choice(options)
    if choose is None or options.blocked_layout:
        return [tvm.transform.Sequential([])]
    return [Winograd(choose=choose)]


def tiling_passes(options: OptimizeOptions) -> list:
    """Shape the graph for the schedules' tiles and vectors (CPU targets only; exact but for Winograd)."""
    off = tvm.transform.Sequential([])
    return [Int8ChannelsLast(),  # integer convs channels-last (QDQ graphs only; passes/int8_layout.py)
            relax.transform.FoldConstant(),
            BlockChannels(winograd=winograd_choice(options), bands=options.partition_borders)
            if options.blocked_layout else off,
            PadToTiles(keep_pointwise=options.pixel_conv) if options.pad_to_tiles else off,
            SeparableResize() if options.separable_resize else off]


def lowering_passes(options: OptimizeOptions) -> list:
    """Legalize to TensorIR and fuse: the task boundaries tuning databases are keyed by."""
    return [
        # integer convs as int8 kernels (CPU targets; after the rewrites above, which read conv attributes)
        Int8Kernels(),
        Legalize(options.fast_math),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        # weights are constants: mark them layout-free, so a schedule may ask for them in any layout it likes
        relax.transform.AttachAttrLayoutFreeBuffers(),
        # int32 indices, so that the schedules' peeled tiles survive the build (schedules/narrow.py)
        NarrowCPUKernels(),
    ]


def schedule_passes(options: OptimizeOptions, target) -> list:
    """Tuned schedules from the database first; kernels it lacks get the family's default rules."""
    passes = []
    if options.database is not None:  # apply_schedules enters the database (parsed once per process)
        passes.append(relax.transform.MetaScheduleApplyDatabase())
    from atrous.pipeline.schedules import default_rules, stock_gpu_rules
    from atrous.pipeline.schedules.guard import ApplyRules

    if options.default_schedules:  # a rule that raises declines, recorded (schedules/guard.py)
        passes.append(ApplyRules(*default_rules(target, options)))
    elif "gpu" in target.keys:  # GPU kernels cannot run unscheduled: TVM's own rules bind them to threads
        passes.append(ApplyRules(*stock_gpu_rules()))
    # weight re-layouts the schedules asked for become separate functions on constants, folded at compile time
    passes += [
        relax.transform.SplitLayoutRewritePreproc(),
        relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination(),
    ]
    return passes


def graph_passes(options: OptimizeOptions) -> list:
    """Everything before scheduling: the module these passes produce is what tuning tasks are extracted from."""
    return (
        # Phase: inference simplification (batch norm and friends to arithmetic, constant folding)
        inference_passes(options)
        # Phase: dilation-aware rewrites (exact: the same products, minus those that can only multiply zeros)
        + dilation_passes(options)
        + [relax.transform.FoldConstant()]
        # Phase: sums of 1x1 convs as one conv over the concatenated inputs (fewer passes over the output)
        + [MergeSummedConvs() if options.merge_summed_convs else tvm.transform.Sequential([])]
        # Phase: 3x3 convs as Winograd products (CPU, optional; verified like everything, not bit-exact)
        + algorithm_passes(options)
        # Phase: convs padded to whole register tiles (CPU), cropped back after the conv
        + tiling_passes(options)
        # Phase: fp16 builds (GPU): activations and weights in float16, after the rewrites (they read fp32 graphs)
        + [HalfPrecision() if options.precision == "fp16" else tvm.transform.Sequential([])]
        # Phase: lowering to fused TensorIR functions
        + lowering_passes(options)
    )


def optimize_passes(options: OptimizeOptions, target) -> list:
    # Phase: schedules from the device's tuning database, then defaults
    return graph_passes(options) + schedule_passes(options, target)


def lower(mod: tvm.IRModule, target, options: OptimizeOptions = OptimizeOptions()) -> tvm.IRModule:
    """Relax -> fused TensorIR, unscheduled."""
    with target:
        return tvm.transform.Sequential(graph_passes(options))(mod)


def apply_schedules(mod: tvm.IRModule, target, options: OptimizeOptions) -> tvm.IRModule:
    database = read_database(options.database) if options.database is not None else contextlib.nullcontext()
    with target, database:
        # dlight's pass updates the module it is given in place: give it a copy, so ``mod`` stays unscheduled
        copy = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        return tvm.transform.Sequential(schedule_passes(options, target))(copy)


def optimize(mod: tvm.IRModule, target, options: OptimizeOptions = OptimizeOptions()) -> tvm.IRModule:
    return apply_schedules(lower(mod, target, options), target, options)
