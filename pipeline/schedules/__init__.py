"""Default schedules per device family, applied to kernels the tuning database does not cover."""

from .cpu import default_rules as cpu_rules

__all__ = ["cpu_rules"]
