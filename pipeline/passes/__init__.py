"""Relax graph passes written for atrous networks (each one idea, each exact)."""

from .mutate import rewrite_functions

from .border_bands import PartitionBorders, bands
from .dead_taps import DropDeadTaps, live_taps
from .widen_rows import WidenRows

__all__ = ["DropDeadTaps", "PartitionBorders", "WidenRows", "bands", "live_taps", "rewrite_functions"]
