"""Winograd F(m x m, 3 x 3) for 3x3 convs in the blocked channel layout, dilated ones included (CPU targets).

A 3x3 conv computes an m x m tile of outputs from 9 m^2 products per input channel; Winograd's minimal filtering
(Lavin & Gray 2016, the matrices of passes/winograd.py) needs (m+2)^2: 2.25x fewer for m = 2, 4x for m = 4. A
rate-d conv is d^2 dense convs over the phases of its input (the pixels at ``(d*i + a, d*j + b)``), so it applies
to dilated convs too: here the phases are only index arithmetic, no data moves. Three kernels, all blocked
(``c`` channels, one vector, per block):

1. input transform ``V = B^T d B`` of every tile ``d`` ((m+2) x (m+2) input pixels) of every phase, laid out as
   ``[(m+2)^2 positions, C/c, 1, tiles, c]``: per position, a blocked 1-row image of tiles;
2. the products, summed over input channels: per position, a blocked 1x1 conv of the tiles with the transformed
   weights ``U = G w G^T`` (computed here, at compile time), ``[(m+2)^2, K/c, C/c, c, c]``. This is where the
   work is, and the blocked conv schedule runs it (schedules/blocked_conv.py: the positions are its batch);
3. output transform ``Y = A^T M A`` per tile, written back to the blocked output, where the conv's epilogue
   (bias, activation, residual) fuses as usual.

The transforms are written out with their constant coefficients (zeros skipped), one select per position or
output offset, which the schedules unroll into straight-line code (schedules/winograd_transforms.py). Not
bit-exact: the transforms round differently from the direct sum (relative error ~1e-7 for m = 2, ~1e-6 for
m = 4 in float32; verified like everything).
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx, topi

from atrous.pipeline.schedules.winograd_transforms import INPUT, OUTPUT, PRODUCT, STEP
from atrous.pipeline.passes.winograd import TRANSFORMS, matrices


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _select(index, values: list):
    """``values[index]`` for an index known only at run time (a chain of selects; constant once unrolled)."""
    result = values[-1]
    for k in range(len(values) - 2, -1, -1):
        result = tirx.Select(index == k, values[k], result)
    return result


def _weighted(terms) -> tirx.PrimExpr:
    """sum(coefficient * value) over the non-zero coefficients, in a fixed order."""
    total = None
    for coefficient, value in terms:
        if coefficient == 0:
            continue
        term = value if coefficient == 1 else value * tirx.const(float(coefficient), "float32")
        total = term if total is None else total + term
    return total if total is not None else tirx.const(0.0, "float32")


def tiles(out_h: int, out_w: int, dilation: tuple[int, int], m: int) -> tuple[int, int]:
    """Tiles per phase (rows, columns) covering an output of ``out_h x out_w`` with rate ``dilation``."""
    return _ceil(_ceil(out_h, dilation[0]), m), _ceil(_ceil(out_w, dilation[1]), m)


def input_transform(data, m: int, dilation, padding, out_hw):
    """``[positions, C/c, 1, tiles, c]`` from blocked ``data`` ``[N, C/c, H, W, c]`` (``padding`` top, left,
    bottom, right; the rest of the last tiles reads zeros too)."""
    n, blocks, height, width, lanes = (int(d) for d in data.shape)
    (dh, dw), (top, left) = dilation, padding[:2]
    rows, cols = tiles(*out_hw, dilation, m)
    a = m + 2
    pad_h, pad_w = dh * (rows * m + 2) + top, dw * (cols * m + 2) + left  # every row and column a tile reads
    padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, max(0, pad_h - height - top),
                                                       max(0, pad_w - width - left), 0], name="pad_temp")
    bt = matrices(m)[0]
    per_phase = rows * cols

    def body(position, b, _h, tile, lane):
        image, t = tile // per_phase, tile % per_phase  # image = (batch, phase row, phase column)
        batch, phase = image // (dh * dw), image % (dh * dw)
        ph, pw = phase // dw, phase % dw
        y0, x0 = (t // cols) * m, (t % cols) * m

        def value(xi, nu):
            return _weighted((bt[xi, i] * bt[nu, j], padded[batch, b, (y0 + i) * dh + ph, (x0 + j) * dw + pw, lane])
                             for i in range(a) for j in range(a))

        return _select(position, [value(xi, nu) for xi in range(a) for nu in range(a)])

    return te.compute((a * a, blocks, 1, n * dh * dw * per_phase, lanes), body, name=INPUT)


def product(v, u):
    """``M[pos, k, 0, tile, o] = sum_{b, i} V[pos, b, 0, tile, i] U[pos, k, b, i, o]``: per position, a blocked
    1x1 conv of the tiles (the blocked dense conv schedule takes it)."""
    positions, blocks, _, count, lanes = (int(d) for d in v.shape)
    out_blocks = int(u.shape[1])
    rb = te.reduce_axis((0, blocks), name="rc")
    ri = te.reduce_axis((0, lanes), name="ri")
    return te.compute((positions, out_blocks, 1, count, lanes),
                      lambda p, k, h, t, o: te.sum(v[p, rb, h, t, ri] * u[p, k, rb, ri, o], axis=[rb, ri]),
                      name=PRODUCT)


def output_transform(mm, m: int, dilation, batch: int, out_hw):
    """Blocked ``[N, K/c, out_h, out_w, c]`` from the products ``M``: ``Y = A^T M A`` of each output's tile."""
    _, out_blocks, _, _, lanes = (int(d) for d in mm.shape)
    dh, dw = dilation
    rows, cols = tiles(*out_hw, dilation, m)
    at = matrices(m)[2]
    a = m + 2

    def body(n, k, y, x, lane):
        ph, pw, yy, xx = y % dh, x % dw, y // dh, x // dw
        tile = ((n * dh + ph) * dw + pw) * rows * cols + (yy // m) * cols + xx // m
        i, j = yy % m, xx % m

        def value(i0, j0):
            return _weighted((at[i0, xi] * at[j0, nu], mm[xi * a + nu, k, 0, tile, lane])
                             for xi in range(a) for nu in range(a))

        return _select(i * m + j, [value(i0, j0) for i0 in range(m) for j0 in range(m)])

    return te.compute((batch, out_blocks, *out_hw, lanes), body, name=OUTPUT, attrs={STEP: [m * dh, m * dw]})


def transformed_weight(packed: np.ndarray, m: int) -> np.ndarray:
    """``G w G^T`` of a blocked weight ``[K/c, C/c, 3, 3, c(in), c(out)]`` as ``[(m+2)^2, K/c, C/c, c, c]``."""
    g = matrices(m)[1]
    u = np.einsum("xr,kbrsio,ys->xykbio", g, packed.astype(np.float64), g)
    a = g.shape[0]
    return np.ascontiguousarray(u.reshape(a * a, *u.shape[2:]).astype(packed.dtype))


def fits(out_hw, dilation, m: int) -> bool:
    """Every phase at least one whole tile of outputs (rates beyond the map are for dead_taps/border_bands)."""
    return out_hw[0] >= m * dilation[0] and out_hw[1] >= m * dilation[1]


def emit(bb, data, packed: np.ndarray, m: int, strides, padding, dilation, out_hw):
    """Emit the three kernels for a blocked 3x3 conv of ``data`` with the blocked weight ``packed``; returns
    the blocked output. The caller checked stride 1, groups 1 and ``fits``."""
    if m not in TRANSFORMS:
        raise ValueError(f"Winograd tile {m} is not one of {sorted(TRANSFORMS)}")
    from tvm import relax

    dilation = tuple(int(d) for d in dilation)
    padding = tuple(int(p) for p in padding)
    batch = int(data.ty.shape[0])
    # the input transform is a kernel of its own (opaque: nothing fuses into it); the output transform takes the
    # conv's epilogue (out-elementwise fusable) but is not fused into the products' kernel
    v = bb.emit(bb.call_te(input_transform, data, m, dilation, padding, out_hw, primfunc_name_hint=INPUT,
                           primfunc_attrs={"op_pattern": OPAQUE}))
    u = relax.const(transformed_weight(packed, m))
    products = bb.emit(bb.call_te(product, v, u, primfunc_name_hint=PRODUCT))
    return bb.call_te(output_transform, products, m, dilation, batch, out_hw, primfunc_name_hint=OUTPUT,
                      primfunc_attrs={"op_pattern": OUT_ELEMWISE_FUSABLE})


OUT_ELEMWISE_FUSABLE, OPAQUE = 4, 8  # TVM's OpPatternKind values (FuseOps reads them from "op_pattern")
