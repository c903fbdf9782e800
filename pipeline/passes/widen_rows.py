"""Widen conv output rows to a whole number of register tiles (CPU targets), then crop them back.

The CPU conv schedule (schedules/packed_conv.py) computes a tile of up to 6 neighbouring output pixels per step
(``register_tile``: 6 for 1x1 convs on AVX2, 4 for wider kernels), and the tile must divide the row: a bounds check inside it stops LLVM from keeping the accumulators in registers.
DeepLab's feature maps at 257x257 are 2^k+1 wide (129, 65, 33, 17), and 17 is prime, so its convs fell back to a
one-pixel tile and ran at a third of the speed of 18-wide rows (measured on a 17x17 1x1 conv, 1024->256:
6.8 ms vs 2.7 ms for 18x18 on this machine's znver3, 2 threads).

So a dense conv (groups 1, constant weight, output channels filling vectors) whose output width is not a multiple
of its tile gets ``extra`` more columns of right padding, enough to make it one, and a crop back to the original
width right after it: ``conv(x, pad_hi=p) == crop(conv(x, pad_hi=p + extra*stride))``. The extra columns read
padding and real input like any other column and are discarded; every kept output is computed exactly as before.
The cost is the extra columns (17 -> 18: 6%; 17 -> 20 for a 4-pixel tile) and a crop fused into the epilogue.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..schedules.packed_conv import MIN_IN_CHANNELS, register_budget, register_tile, vector_lanes
from .mutate import constant_conv, conv_op, rewrite_functions



def widened(width: int, tile: int = 6) -> int:
    """The smallest multiple of ``tile`` that is at least ``width`` (rows narrower than a tile stay as they are)."""
    return width if width < tile else -(-width // tile) * tile


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, target):
        super().__init__(mod)
        self.mod = mod
        self.target = target
        self.widened = 0  # convs rewritten (for reports and tests)

    def transform(self):
        return rewrite_functions(self, self.mod)

    def visit_call_(self, call):
        ndim = constant_conv(call)
        rewritten = self._rewrite(call, ndim) if ndim and int(call.attrs.groups) == 1 else None
        return rewritten if rewritten is not None else super().visit_call_(call)

    def _rewrite(self, call, ndim):
        attrs, (data, weight) = call.attrs, call.args
        out_shape = [int(d) for d in call.ty.shape.values]
        out_channels, in_channels, *kernel = (int(d) for d in weight.value.shape)
        width = out_shape[-1]
        # the tile PackedConv will pick for this conv on this target, for a row it divides
        tile = register_tile(None, out_channels, vector_lanes(self.target),
                             register_budget(self.target, kernel[-1]))
        if tile is None or in_channels < MIN_IN_CHANNELS or widened(width, tile[0]) == width:
            return None
        extra = widened(width, tile[0]) - width
        pads = [int(p) for p in attrs.padding]
        pads[-1] += extra * int(attrs.strides[-1])
        wide = self.builder_.emit(conv_op(ndim)(
            self.visit_expr(data), weight, strides=[int(s) for s in attrs.strides], padding=pads,
            dilation=[int(d) for d in attrs.dilation], groups=1, data_layout=attrs.data_layout,
            kernel_layout=attrs.kernel_layout, out_layout=attrs.out_layout, out_dtype=attrs.out_dtype or None))
        self.widened += 1
        return relax.op.strided_slice(wide, axes=[len(out_shape) - 1], begin=[0], end=[width])


@tvm.transform.module_pass(opt_level=0, name="WidenRows")
class WidenRows:
    """Widen dense conv rows to whole register tiles on CPU targets (see module docstring); no-op elsewhere."""

    def transform_module(self, mod, _ctx):
        target = tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "llvm":
            return mod
        return _Rewriter(mod, target).transform()
