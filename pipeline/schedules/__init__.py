"""Default schedules per device family, applied to kernels the tuning database does not cover."""

from .cpu import ConvLike, Elementwise
from .packed_conv import PackedConv


def cpu_rules() -> tuple:
    """First match wins: dense convs pack their weights; other reductions (depthwise, pooling) vectorise rows."""
    return (PackedConv(), ConvLike(), Elementwise())


__all__ = ["cpu_rules"]
