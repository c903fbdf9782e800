"""Default schedules per device family, applied to kernels the tuning database does not cover."""

from atrous.pipeline.schedules.blocked_bands import BlockedBands
from atrous.pipeline.schedules.blocked_conv import BlockedConv
from atrous.pipeline.schedules.blocked_window import BlockedWindow
from atrous.pipeline.schedules.cpu import ConvLike, Elementwise
from atrous.pipeline.schedules.gpu import DirectConv
from atrous.pipeline.schedules.int8_conv import DepthwiseInt8, Int8Conv
from atrous.pipeline.schedules.packed_conv import PackedConv
from atrous.pipeline.schedules.pixel_conv import PixelConv
from atrous.pipeline.schedules.plane_conv import PlaneConv
from atrous.pipeline.schedules.winograd_transforms import WinogradTransforms


def cpu_rules(pixel_conv: bool = True) -> tuple:
    """First match wins: in the blocked channel layout, dense convs (whole, band by band, or Winograd's products)
    are register-blocked, depthwise convs and pools tiled along rows, Winograd's transforms unrolled; in NCHW,
    pointwise convs over whole pixel tiles vectorise pixels, other dense convs pack their weights, depthwise
    convs and pooling windows run plane by plane; other reductions (grouped convs, global pooling) vectorise
    rows. Dense int8 convs (QDQ graphs) get their own register-tiled dot-product kernel (int8_conv.py)."""
    blocked = (BlockedConv(), BlockedWindow(), BlockedBands(), WinogradTransforms())
    pixel = [PixelConv()] if pixel_conv else []
    return (Int8Conv(), DepthwiseInt8(), *blocked, *pixel, PackedConv(), PlaneConv(), ConvLike(), Elementwise())


def stock_gpu_rules() -> tuple:
    """dlight's GPU rules as TVM ships them: every GPU kernel must be bound to threads, tuned or not."""
    from tvm.s_tir import dlight

    return (dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(), dlight.gpu.GeneralReduction(),
            dlight.gpu.Fallback())


def gpu_rules() -> tuple:
    """First match wins: convs and pools get DirectConv; dlight's rules take matmuls, reductions and the rest."""
    return (DirectConv(), *stock_gpu_rules())


def default_rules(target, options=None) -> tuple:
    """The rules for ``target``'s family: CPU (llvm) or GPU (any target with the "gpu" key); ``options`` (an
    OptimizeOptions) may leave PixelConv out."""
    if target.kind.name == "llvm":
        return cpu_rules(getattr(options, "pixel_conv", True))
    if "gpu" in target.keys:
        return gpu_rules()
    raise ValueError(f"no default schedules for target kind '{target.kind.name}'")


__all__ = ["cpu_rules", "default_rules", "gpu_rules", "stock_gpu_rules"]
