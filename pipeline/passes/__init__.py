"""Relax graph passes written for atrous networks (each one idea, each exact)."""

from .dead_taps import DropDeadTaps, live_taps

__all__ = ["DropDeadTaps", "live_taps"]
