"""Relax graph passes written for atrous networks (each one idea, each exact)."""

from .mutate import rewrite_functions

from .border_bands import PartitionBorders, bands
from .dead_taps import DropDeadTaps, live_taps

__all__ = ["DropDeadTaps", "PartitionBorders", "bands", "live_taps", "rewrite_functions"]
