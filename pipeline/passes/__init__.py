"""Relax graph passes written for atrous networks (each one idea; all exact but Winograd, which rounds differently)."""

from atrous.pipeline.passes.mutate import rewrite_functions

from atrous.pipeline.passes.blocked_layout import BlockChannels
from atrous.pipeline.passes.border_bands import PartitionBorders, bands
from atrous.pipeline.passes.dead_taps import DropDeadTaps, live_taps
from atrous.pipeline.passes.fast_math import Legalize
from atrous.pipeline.passes.frontend_ops import FrontendOps
from atrous.pipeline.passes.separable_resize import SeparableResize
from atrous.pipeline.passes.summed_convs import MergeSummedConvs
from atrous.pipeline.passes.tile_padding import PadToTiles
from atrous.pipeline.passes.transposed_phases import TransposedConvPhases
from atrous.pipeline.passes.winograd import Winograd

__all__ = ["BlockChannels", "DropDeadTaps", "FrontendOps", "Legalize", "MergeSummedConvs", "PadToTiles",
           "PartitionBorders", "SeparableResize", "TransposedConvPhases", "Winograd", "bands", "live_taps",
           "rewrite_functions"]
