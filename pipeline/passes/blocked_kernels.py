"""TensorIR of convolutions in the blocked channel layout, as the legalization of Relax convs with such layouts.

``BlockChannels`` (blocked_layout.py) rewrites convs to Relax ``conv2d``/``conv1d`` calls whose layouts carry a
channel block ``c`` (one vector of the CPU); TVM's own legalization refuses those layouts, so this module gives
them their TensorIR:

* dense: data ``NCHW{c}c`` (``[N, C/c, H, W, c]``), weight ``OIHW{c}i{c}o`` (``[K/c, C/c, R, S, c, c]``), output
  ``NCHW{c}c``: ``out[n, k, y, x, o] = sum_{b, r, s, i} in[n, b, y*sy + r*dy, x*sx + s*dx, i] w[k, b, r, s, i, o]``;
* dense from a plain input (a stem conv over 3 colour channels, too few to fill a block): data ``NCHW``, weight
  ``OIHW{c}o`` (``[K/c, C, R, S, c]``), output ``NCHW{c}c``;
* depthwise: data and output ``NCHW{c}c``, weight ``OIHW1i{c}o`` (``[C/c, 1, R, S, 1, c]``), groups = channels;
  each lane of a vector is one channel.

1-D convs (``NCW{c}c``) are the same with one spatial axis. Zero padding is a separate block (``pad_temp``), as in
TOPI, which the schedules compute as its own pass. The sums run in the order written (block, taps, lanes), the
order the schedules keep.
"""

from __future__ import annotations

import re

import tvm
from tvm import relax, te, topi

BLOCKED = re.compile(r"^NC([HW]+)(\d+)c$")
BAND, BANDS = "conv2d_band", "conv2d_bands"  # the block names of ``banded``: one band's conv, the assembly


def block_of(layout: str) -> int | None:
    """The channel block of a data layout like ``NCHW16c`` (None for a plain layout)."""
    match = BLOCKED.match(layout)
    return int(match.group(2)) if match else None


def _pad(data, before: list[int], after: list[int], plain: bool):
    """Zero padding of the spatial axes (the block axis, if any, last and unpadded)."""
    if not any(before) and not any(after):
        return data
    tail = [] if plain else [0]
    return topi.nn.pad(data, [0, 0, *before, *tail], [0, 0, *after, *tail], name="pad_temp")


def _spatial(call, ndim: int) -> tuple[list[int], list[int], list[int], list[int]]:
    attrs = call.attrs
    padding = [int(p) for p in attrs.padding]
    return ([int(s) for s in attrs.strides], [int(d) for d in attrs.dilation], padding[:ndim], padding[ndim:])


def _out_size(size, kernel: int, stride: int, dilation: int, before: int, after: int) -> int:
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def dense(data, weight, strides, dilation, before, after, plain: bool, name: str):
    """Blocked conv over input channels; ``plain``: data in NC.. layout (weight ``[K/c, C, taps.., c]``)."""
    ndim = len(strides)
    padded = _pad(data, before, after, plain)
    taps = [int(k) for k in weight.shape[2:2 + ndim]]
    block = int(weight.shape[-1])
    sizes = [_out_size(int(data.shape[2 + a]), taps[a], strides[a], dilation[a], before[a], after[a])
             for a in range(ndim)]
    out_shape = (int(data.shape[0]), int(weight.shape[0]), *sizes, block)
    rc = te.reduce_axis((0, int(weight.shape[1])), name="rc")
    rk = [te.reduce_axis((0, t), name=n) for t, n in zip(taps, ("ry", "rx")[-ndim:] if ndim == 2 else ("rx",))]
    ri = None if plain else te.reduce_axis((0, int(data.shape[-1])), name="ri")

    def body(n, k, *rest):
        pos, o = rest[:ndim], rest[ndim]
        where = [pos[a] * strides[a] + rk[a] * dilation[a] for a in range(ndim)]
        if plain:
            return te.sum(padded[(n, rc, *where)] * weight[(k, rc, *rk, o)], axis=[rc, *rk])
        return te.sum(padded[(n, rc, *where, ri)] * weight[(k, rc, *rk, ri, o)], axis=[rc, *rk, ri])

    return te.compute(out_shape, body, name=name)


def depthwise(data, weight, strides, dilation, before, after, name: str):
    """Blocked depthwise conv: one channel per lane, weight ``[C/c, 1, taps.., 1, c]``."""
    ndim = len(strides)
    padded = _pad(data, before, after, False)
    taps = [int(k) for k in weight.shape[2:2 + ndim]]
    sizes = [_out_size(int(data.shape[2 + a]), taps[a], strides[a], dilation[a], before[a], after[a])
             for a in range(ndim)]
    rk = [te.reduce_axis((0, t), name=n) for t, n in zip(taps, ("ry", "rx")[-ndim:] if ndim == 2 else ("rx",))]

    def body(n, b, *rest):
        pos, lane = rest[:ndim], rest[ndim]
        where = [pos[a] * strides[a] + rk[a] * dilation[a] for a in range(ndim)]
        return te.sum(padded[(n, b, *where, lane)] * weight[(b, 0, *rk, 0, lane)], axis=rk)

    return te.compute((int(data.shape[0]), int(data.shape[1]), *sizes, int(data.shape[-1])), body, name=name)


def banded(data, weight, dilation, before, row_bands, col_bands):
    """A dilated 2-D conv over blocked ``data`` computed band by band (passes/border_bands.py ``bands``: each
    band of outputs reads real input under one run of taps), all bands reading one weight ``[K/c, C/c, R, S,
    c, c]`` at their taps' offsets, then assembled into the output (``conv2d_bands``); no padding is read."""
    n, blocks = int(data.shape[0]), int(weight.shape[0])
    block = int(weight.shape[-1])
    (dh, dw), (top, left) = dilation, before
    def band(i, j, y0, y1, a, b, x0, x1, c, e):
        rc = te.reduce_axis((0, int(weight.shape[1])), name="rc")
        ry, rx = te.reduce_axis((0, b - a + 1), name="ry"), te.reduce_axis((0, e - c + 1), name="rx")
        ri = te.reduce_axis((0, block), name="ri")

        def body(nn, k, y, x, o):
            row, col = y0 + y - top + (a + ry) * dh, x0 + x - left + (c + rx) * dw
            return te.sum(data[nn, rc, row, col, ri] * weight[k, rc, a + ry, c + rx, ri, o], axis=[rc, ry, rx, ri])

        return te.compute((n, blocks, y1 - y0, x1 - x0, block), body, name=f"{BAND}_{i}_{j}")

    pieces = [((y0, y1, x0, x1), band(i, j, y0, y1, a, b, x0, x1, c, e))
              for i, (y0, y1, a, b) in enumerate(row_bands) for j, (x0, x1, c, e) in enumerate(col_bands)]
    height, width = row_bands[-1][1], col_bands[-1][1]

    def assemble(nn, k, y, x, o):
        # row-major bands, each tested before those above and to its left (if_then_else reads one branch only)
        value = None
        for (y0, _, x0, _), piece in pieces:
            here = piece[nn, k, y - y0, x - x0, o]
            value = here if value is None else tvm.tirx.if_then_else(tvm.tirx.all(y >= y0, x >= x0), here, value)
        return value

    return te.compute((n, blocks, height, width, block), assemble, name=BANDS)


def legalize_conv(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """Legalization of ``relax.nn.conv1d`` / ``conv2d``: blocked layouts here, the rest by TVM's own."""
    attrs = call.attrs
    out_block = block_of(attrs.out_layout)
    if out_block is None:
        return _stock(call.op)(bb, call)
    ndim = len(attrs.strides)
    strides, dilation, before, after = _spatial(call, ndim)
    plain = block_of(attrs.data_layout) is None
    groups = int(attrs.groups)
    kind = "conv1d" if ndim == 1 else "conv2d"
    if groups == 1:
        return bb.call_te(dense, call.args[0], call.args[1], strides, dilation, before, after, plain,
                          f"{kind}_nchwc", primfunc_name_hint=f"{kind}_nchwc")
    if not plain and groups == int(call.ty.shape[1]) * out_block:
        return bb.call_te(depthwise, call.args[0], call.args[1], strides, dilation, before, after,
                          f"depthwise_{kind}_nchwc", primfunc_name_hint=f"depthwise_{kind}_nchwc")
    raise ValueError(f"no blocked kernel for a {kind} with {groups} groups in layout {attrs.data_layout}")


def _stock(op):
    return tvm.ir.Op.get(op.name).get_attr("FLegalize")


BLOCKED_LEGALIZE = {"relax.nn.conv2d": legalize_conv, "relax.nn.conv1d": legalize_conv}
