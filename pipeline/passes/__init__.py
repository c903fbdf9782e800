"""Relax graph passes written for atrous networks (each one idea; all exact but Winograd, which rounds differently)."""

from .mutate import rewrite_functions

from .blocked_layout import BlockChannels
from .border_bands import PartitionBorders, bands
from .dead_taps import DropDeadTaps, live_taps
from .fast_math import Legalize
from .frontend_ops import FrontendOps
from .separable_resize import SeparableResize
from .summed_convs import MergeSummedConvs
from .tile_padding import PadToTiles
from .transposed_phases import TransposedConvPhases
from .winograd import Winograd

__all__ = ["BlockChannels", "DropDeadTaps", "FrontendOps", "Legalize", "MergeSummedConvs", "PadToTiles",
           "PartitionBorders", "SeparableResize", "TransposedConvPhases", "Winograd", "bands", "live_taps",
           "rewrite_functions"]
