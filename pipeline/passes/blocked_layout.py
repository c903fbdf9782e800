"""Activations in a blocked channel layout across chains of ops (CPU targets), as ONNX Runtime's and oneDNN's
CPU paths keep them.

In NCHW a conv's output channels are a plane apart, so a kernel that vectorises over channels writes its tile
back transposed, and one that vectorises over pixels meets DeepLab's odd rows (129, 65, 33, 17). In
``NCHW{c}c`` (``[N, C/c, H, W, c]``, ``c`` = the CPU's fp32 vector lanes: 16 with AVX-512, 8 with AVX2, 4 on
NEON) every pixel's ``c`` channels are one vector, and a conv is a register-blocked product near the FMA peak
(schedules/blocked_conv.py). Changing layout costs a pass over the tensor, so the layout is kept across the ops
between convs and changed only where an op needs the plain one:

* convs with a constant weight: dense (groups 1), and depthwise (one channel per group), read and write blocked
  tensors, their weights re-laid out here, at compile time (passes/blocked_kernels.py has their TensorIR); a conv
  over too few channels to fill a block (a stem over RGB) reads the plain input and writes blocked;
* elementwise ops, pools, means over the image, resizes, slices and pads of image axes, concatenations: the same
  op on the blocked tensor (constants re-laid out at compile time);
* anything else (reshapes, transposes, softmax over channels, matmuls, ...) gets its input back in the plain
  layout (``layout_transform``), made once per tensor and only if something needs it; so do the graph outputs.

Channels that do not fill the last block are padded: conv weights get zero rows and columns for them, constants
zeros (ones where they divide), so the padded lanes hold finite values that no real channel ever reads (a conv
multiplies them by zero weights). Ops that could make them infinite or NaN (exp, log, division by a tensor) keep
the blocked layout only for tensors without padded lanes. Every output is computed by the same arithmetic as
before, except that a conv sums its products in another order (input blocks, taps, lanes); verified like
everything.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from atrous.pipeline.passes import blocked_winograd
from atrous.pipeline.passes.mutate import ModuleRewriter

CONVS = {"relax.nn.conv2d": 2, "relax.nn.conv1d": 1}
# f(finite) is finite for every finite input: allowed on tensors with padded lanes
SAFE_UNARY = {"relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.leakyrelu", "relax.nn.gelu",
              "relax.nn.gelu_tanh", "relax.nn.silu", "relax.negative", "relax.abs", "relax.erf", "relax.floor",
              "relax.ceil", "relax.round", "relax.sign", "relax.square"}
UNARY = SAFE_UNARY | {"relax.exp", "relax.log", "relax.sqrt", "relax.rsqrt"}
SAFE_BINARY = {"relax.add", "relax.subtract", "relax.multiply", "relax.maximum", "relax.minimum"}
BINARY = SAFE_BINARY | {"relax.divide", "relax.power"}
POOL_BUILDERS = {"relax.nn.max_pool2d": relax.op.nn.max_pool2d, "relax.nn.avg_pool2d": relax.op.nn.avg_pool2d,
                 "relax.nn.adaptive_avg_pool2d": relax.op.nn.adaptive_avg_pool2d,
                 "relax.nn.max_pool1d": relax.op.nn.max_pool1d, "relax.nn.avg_pool1d": relax.op.nn.avg_pool1d,
                 "relax.image.resize2d": relax.op.image.resize2d}
POOLS = set(POOL_BUILDERS)
REDUCTION_BUILDERS = {"relax.mean": relax.op.mean, "relax.max": relax.op.max, "relax.sum": relax.op.sum,
                      "relax.min": relax.op.min}
REDUCTIONS = set(REDUCTION_BUILDERS)
# a conv over fewer input channels than this share of a block reads the plain input (padding it to a whole
# block would multiply mostly zeros: an RGB stem is 3 of 16 channels on AVX-512)
MIN_FILL = 0.5


@dataclass(frozen=True)
class Blocked:
    """A tensor in the blocked layout: ``var`` is ``[N, ceil(channels/c), *image, c]``."""

    var: relax.Expr
    channels: int
    spatial: int  # image axes: 2 (NCHW) or 1 (NCW)

    @property
    def padded(self) -> bool:
        return self.var.ty.shape[1] * self.var.ty.shape[-1] != self.channels


def layout(spatial: int, block: int) -> str:
    return f"NC{'HW'[-spatial:] if spatial == 2 else 'W'}{block}c"


def _shape(expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


def _python(value):
    """An attribute value as the op builders take it (arrays as tuples of Python numbers)."""
    if isinstance(value, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
        return value.value
    if hasattr(value, "__len__") and not isinstance(value, str):
        return tuple(_python(v) for v in value)
    return value


def _const(expr):
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None


HANDLED = set(CONVS) | UNARY | BINARY | POOLS | REDUCTIONS | {"relax.concat", "relax.strided_slice", "relax.nn.pad"}


def _op_name(call) -> str | None:
    return getattr(getattr(call, "op", None), "name", None)


def _users(mod) -> dict:
    """{var: [calls that read it]} over every Relax function of ``mod`` (tuples of a concat count as reads)."""
    users: dict = {}
    for func in mod.functions.values():
        if not isinstance(func, relax.Function):
            continue
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value

                def visit(expr, value=value):
                    if isinstance(expr, relax.Var):
                        users.setdefault(expr, []).append(value)

                relax.analysis.post_order_visit(value, visit)
    return users


def _grows(call) -> bool:
    """A layout-neutral op whose output has more elements than its input (an upsampling resize, a pad): done in
    the plain layout when only plain consumers follow, so that the layout changes on the smaller tensor. Convs
    are always blocked: their blocked kernels are what the layout is for."""
    if _op_name(call) in CONVS:
        return False
    out, first = _shape(call), _shape(call.args[0]) if call.args else None
    return out is not None and first is not None and int(np.prod(out)) > int(np.prod(first))


@mutator
class _Blocker(ModuleRewriter):
    def __init__(self, mod, block: int, target=None, winograd=None, bands: bool = False):
        super().__init__(mod)
        self.block, self.target, self.winograd, self.bands = block, target, winograd, bands
        self.banded = 0  # dilated convs computed band by band
        self.decisions: list[str] = []  # "conv key: m" of every conv Winograd could take (0: direct)
        self.blocked: dict = {}  # plain var -> Blocked
        self.plain: dict = {}  # plain var -> its plain value, made when something needs it
        self.converted = 0  # ops emitted in the blocked layout (for reports and tests)

    # ---------------------------------------------------------------------------------------------- bindings
    def transform(self):
        from atrous.pipeline.passes.winograd import DECISIONS

        self.users = _users(self.mod)
        mod = super().transform()
        return mod.with_attr(DECISIONS, self.decisions) if self.decisions else mod

    def visit_var_binding_(self, binding):
        value = binding.value
        rewritten = None
        if isinstance(value, relax.Call) and not (_grows(value) and self._only_plain_users(binding.var)):
            rewritten = self._rewrite(value)
        if rewritten is None:
            return super().visit_var_binding_(binding)
        self.converted += 1
        blocked = Blocked(self.builder_.emit(rewritten[0]), rewritten[1], rewritten[2])
        self.blocked[binding.var] = blocked
        if not isinstance(binding.var, relax.DataflowVar):  # leaves the dataflow block: plain, at once
            out = self.builder_.emit_output(self._unblock(blocked))
            self.plain[binding.var] = out
            self.set_var_remap(binding.var, out)

    def _only_plain_users(self, var) -> bool:
        """Whether every use of ``var`` needs the plain layout (a graph output, or ops this pass keeps plain)."""
        users = self.users.get(var, [])
        return not isinstance(var, relax.DataflowVar) or not any(_op_name(u) in HANDLED for u in users)

    def visit_dataflow_var_(self, var):
        return self._plain_of(var) if var in self.blocked else super().visit_dataflow_var_(var)

    def visit_var_(self, var):
        return self._plain_of(var) if var in self.blocked else super().visit_var_(var)

    def _plain_of(self, var):
        if var not in self.plain:
            self.plain[var] = self.builder_.emit(self._unblock(self.blocked[var]))
        return self.plain[var]

    # ------------------------------------------------------------------------------------------- layouts
    def _unblock(self, t: Blocked):
        block, spatial = self.block, t.spatial
        if spatial == 2:
            plain = relax.op.layout_transform(t.var, index_map=lambda n, b, h, w, i: (n, b * block + i, h, w))
        else:
            plain = relax.op.layout_transform(t.var, index_map=lambda n, b, w, i: (n, b * block + i, w))
        if t.padded:
            plain = relax.op.strided_slice(self.builder_.emit(plain), axes=[1], begin=[0], end=[t.channels])
        return plain

    def _block(self, expr, spatial: int) -> Blocked:
        block = self.block
        if spatial == 2:
            index_map = lambda n, c, h, w: (n, c // block, h, w, c % block)  # noqa: E731
        else:
            index_map = lambda n, c, w: (n, c // block, w, c % block)  # noqa: E731
        var = self.builder_.emit(relax.op.layout_transform(expr, index_map=index_map, pad_value=0.0))
        return Blocked(var, _shape(expr)[1], spatial)

    def _operand(self, expr) -> Blocked | None:
        """``expr`` as a blocked tensor if it already is one (no conversion is emitted)."""
        return self.blocked.get(expr) if isinstance(expr, relax.Var) else None

    def _blockable(self, expr) -> bool:
        shape = _shape(expr)
        return shape is not None and len(shape) in (3, 4) and expr.ty.dtype == "float32"

    # -------------------------------------------------------------------------------------------- op table
    def _rewrite(self, call):
        name = getattr(call.op, "name", None)
        if name in CONVS:
            return self._conv(call, CONVS[name])
        if name in UNARY:
            return self._unary(call, name in SAFE_UNARY)
        if name in BINARY:
            return self._binary(call, name)
        if name in POOLS:
            return self._pool(call)
        if name in REDUCTIONS:
            return self._reduction(call)
        if name == "relax.concat":
            return self._concat(call)
        if name == "relax.strided_slice":
            return self._slice(call)
        if name == "relax.nn.pad":
            return self._pad(call)
        return None

    def _unary(self, call, safe: bool):
        x = self._operand(call.args[0])
        if x is None or (x.padded and not safe):
            return None
        return relax.Call(call.op, [x.var, *call.args[1:]], call.attrs, call.ty_args), x.channels, x.spatial

    def _binary(self, call, name: str):
        a, b = call.args
        anchor = self._operand(a) or self._operand(b)
        out = _shape(call)
        if anchor is None or out is None or len(out) != anchor.spatial + 2 or out[1] != anchor.channels:
            return None
        safe = name in SAFE_BINARY or (name == "relax.divide" and _const(b) is not None and a is not b)
        if anchor.padded and not safe:
            return None
        fill = 1.0 if name in ("relax.divide", "relax.power") else 0.0
        args = [self._like(arg, anchor, fill) for arg in (a, b)]
        if None in args:
            return None
        return relax.Call(call.op, args, call.attrs, call.ty_args), anchor.channels, anchor.spatial

    def _like(self, expr, anchor: Blocked, fill: float):
        """An operand of an elementwise op with blocked ``anchor``, in the blocked layout: blocked tensors as they
        are, constants re-laid out here, scalars kept, plain tensors converted."""
        known = self._operand(expr)
        if known is not None:
            return known.var if known.channels == anchor.channels else None
        shape = _shape(expr)
        rank = anchor.spatial + 2
        if shape is None or len(shape) > rank:
            return None
        if all(d == 1 for d in shape):
            return expr  # broadcasts in any layout
        shape = [1] * (rank - len(shape)) + shape
        if shape[1] not in (1, anchor.channels):
            return None
        value = _const(expr)
        if value is not None:
            return relax.const(self._pack_constant(value.reshape(shape), fill), value.dtype)
        if shape[1] == 1:  # the same value for every channel: one lane, broadcast over the block
            return relax.op.reshape(expr, [*shape, 1])
        if not self._blockable(expr):
            return None
        return self._block(relax.op.reshape(expr, shape) if len(_shape(expr)) != rank else expr, anchor.spatial).var

    def _pack_constant(self, value: np.ndarray, fill: float) -> np.ndarray:
        """``[N, C or 1, *image]`` -> ``[N, ceil(C/c), *image, c]`` (lanes past C filled with ``fill``); a
        per-image constant (C = 1) gets one lane."""
        block = self.block
        if value.shape[1] == 1:
            return value[..., None]
        channels = value.shape[1]
        blocks = -(-channels // block)
        padded = np.full((value.shape[0], blocks * block, *value.shape[2:]), fill, value.dtype)
        padded[:, :channels] = value
        moved = padded.reshape(value.shape[0], blocks, block, *value.shape[2:])
        return np.ascontiguousarray(np.moveaxis(moved, 2, -1))

    # -------------------------------------------------------------------------------------------- convs
    def _conv(self, call, spatial: int):
        attrs = call.attrs
        data, weight = call.args
        kernel = _const(weight)
        plain_layout = ("NCHW", "OIHW") if spatial == 2 else ("NCW", "OIW")
        if (kernel is None or (attrs.data_layout, attrs.kernel_layout) != plain_layout
                or attrs.out_layout != attrs.data_layout or kernel.dtype != np.float32):
            return None
        out_channels, in_per_group = kernel.shape[:2]
        groups = int(attrs.groups)
        x = self._operand(data)
        channels = x.channels if x else (_shape(data) or [0, 0])[1]
        if groups == 1:
            if x is None and channels < MIN_FILL * self.block:
                return self._stem(call, kernel, spatial)
            x = x or (self._block(data, spatial) if self._blockable(data) else None)
            if x is None:
                return None
            packed = self._pack_dense(kernel)
            kernel_layout = f"OI{'HW' if spatial == 2 else 'W'}{self.block}i{self.block}o"
            m = self._winograd_tile(call, kernel) if spatial == 2 else None
            if m:
                return (blocked_winograd.emit(self.builder_, x.var, packed, m, attrs.strides, attrs.padding,
                                              attrs.dilation, _shape(call)[2:]), out_channels, spatial)
            banded = self._bands(call, kernel, x, packed) if spatial == 2 and self.bands else None
            if banded is not None:
                return banded, out_channels, spatial
        elif groups == channels == out_channels and in_per_group == 1:
            x = x or (self._block(data, spatial) if self._blockable(data) and channels >= self.block else None)
            if x is None:
                return None
            packed = self._pack_depthwise(kernel)
            kernel_layout = f"OI{'HW' if spatial == 2 else 'W'}1i{self.block}o"
            groups = int(x.var.ty.shape[1]) * self.block
        else:
            return None
        data_layout = layout(spatial, self.block)
        conv = (relax.op.nn.conv2d if spatial == 2 else relax.op.nn.conv1d)(
            x.var, relax.const(packed), strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
            groups=groups, data_layout=data_layout, kernel_layout=kernel_layout, out_layout=data_layout,
            out_dtype=attrs.out_dtype or None)
        return conv, out_channels, spatial

    def _bands(self, call, kernel, x: Blocked, packed: np.ndarray):
        """A dilated conv whose outputs see real input under few of its taps, as one kernel computing band by
        band (passes/border_bands.py decides where that pays) over one copy of the packed weight; None where
        it does not pay."""
        from atrous.pipeline.passes.blocked_kernels import BANDS, banded
        from atrous.pipeline.passes.border_bands import MAX_KEPT, bands, kept_share

        attrs = call.attrs
        dilation, pads = [int(d) for d in attrs.dilation], [int(p) for p in attrs.padding]
        if max(dilation) == 1 or any(int(s) != 1 for s in attrs.strides):
            return None
        shape = _shape(call.args[0])
        per_axis = [bands(shape[2 + i], kernel.shape[2 + i], dilation[i], pads[i], pads[i + 2]) for i in (0, 1)]
        if (any(a > b for axis in per_axis for _, _, a, b in axis)
                or kept_share(*per_axis, kernel.shape[2], kernel.shape[3]) > MAX_KEPT):
            return None
        self.banded += 1
        return self.builder_.call_te(banded, x.var, relax.const(packed), dilation, pads[:2], *per_axis,
                                     primfunc_name_hint=BANDS)

    def _winograd_tile(self, call, kernel) -> int | None:
        """The Winograd tile ``self.winograd`` gives this dense conv (3x3, stride 1), recorded; None: direct."""
        from atrous.pipeline.passes.winograd import conv_of

        conv = conv_of(call) if self.winograd is not None else None
        if conv is None:
            return None
        m = self.winograd(conv, self.target)
        m = m if m and blocked_winograd.fits((conv.out_h, conv.out_w), conv.dilation, m) else None
        self.decisions.append(f"{conv.key()}: {m or 0}")
        return m

    def _stem(self, call, kernel, spatial: int):
        """A conv over a plain input of few channels, writing the blocked layout (weight ``[K/c, C, taps.., c]``)."""
        attrs = call.attrs
        blocks = -(-kernel.shape[0] // self.block)
        padded = np.zeros((blocks * self.block, *kernel.shape[1:]), kernel.dtype)
        padded[:kernel.shape[0]] = kernel
        packed = np.moveaxis(padded.reshape(blocks, self.block, *kernel.shape[1:]), 1, -1)
        taps = "HW" if spatial == 2 else "W"
        conv = (relax.op.nn.conv2d if spatial == 2 else relax.op.nn.conv1d)(
            call.args[0], relax.const(np.ascontiguousarray(packed)), strides=attrs.strides, padding=attrs.padding,
            dilation=attrs.dilation, groups=1, data_layout=attrs.data_layout, kernel_layout=f"OI{taps}{self.block}o",
            out_layout=layout(spatial, self.block), out_dtype=attrs.out_dtype or None)
        return conv, kernel.shape[0], spatial

    def _pack_dense(self, kernel: np.ndarray) -> np.ndarray:
        """``[K, C, *taps]`` -> ``[K/c, C/c, *taps, c (in), c (out)]``, zero rows and columns for padding."""
        block, (k, c), taps = self.block, kernel.shape[:2], kernel.shape[2:]
        kb, cb = -(-k // block), -(-c // block)
        padded = np.zeros((kb * block, cb * block, *taps), kernel.dtype)
        padded[:k, :c] = kernel
        split = padded.reshape(kb, block, cb, block, *taps)
        order = (0, 2, *range(4, 4 + len(taps)), 3, 1)
        return np.ascontiguousarray(split.transpose(order))

    def _pack_depthwise(self, kernel: np.ndarray) -> np.ndarray:
        """``[C, 1, *taps]`` -> ``[C/c, 1, *taps, 1, c]``."""
        block, channels, taps = self.block, kernel.shape[0], kernel.shape[2:]
        blocks = -(-channels // block)
        padded = np.zeros((blocks * block, 1, *taps), kernel.dtype)
        padded[:channels] = kernel
        split = padded.reshape(blocks, block, 1, *taps)
        order = (0, 2, *range(3, 3 + len(taps)), 1)
        return np.ascontiguousarray(split.transpose(order)[:, :, ..., None, :].reshape(blocks, 1, *taps, 1, block))

    # ------------------------------------------------------------------------------ image-wise ops
    def _pool(self, call):
        x = self._operand(call.args[0])
        attrs = call.attrs
        plain = "NCHW" if x is None or x.spatial == 2 else "NCW"
        if x is None or attrs.layout != plain or getattr(attrs, "out_layout", plain) != plain:
            return None
        builder = POOL_BUILDERS[call.op.name]
        blocked_layout = layout(x.spatial, self.block)
        kwargs = {name: _python(getattr(attrs, name)) for name in inspect.signature(builder).parameters
                  if name not in ("data", "size") and hasattr(attrs, name)}
        kwargs.update(layout=blocked_layout, **({"out_layout": blocked_layout} if "out_layout" in kwargs else {}))
        extra = [call.args[1]] if len(call.args) > 1 else []  # resize2d's output size
        return builder(x.var, *extra, **kwargs), x.channels, x.spatial

    def _reduction(self, call):
        x = self._operand(call.args[0])
        axes = [int(a) for a in call.attrs.axis] if x is not None and call.attrs.axis is not None else []
        rank = x.spatial + 2 if x else 0
        axes = [a % rank for a in axes] if rank else axes
        if x is None or not call.attrs.keepdims or not axes or any(a < 2 for a in axes):
            return None
        # axes counted from the end (the dynamo exporter's -1, -2) would name the lane axis in the blocked rank
        reduce = REDUCTION_BUILDERS[call.op.name]
        return reduce(x.var, axis=axes, keepdims=True), x.channels, x.spatial

    def _slice(self, call):
        x = self._operand(call.args[0])
        if x is None or not isinstance(call.args[1], relax.Tuple):
            return None
        rank = x.spatial + 2
        axes = [int(a.value) % rank for a in call.args[1].fields]  # counted from the front: the same in both
        if 1 in axes or 0 in axes:
            return None
        begin, end, *strides = ([int(v.value) for v in arg.fields] for arg in call.args[2:])
        sliced = relax.op.strided_slice(x.var, axes=axes, begin=begin, end=end, strides=strides[0] if strides else None,
                                        assume_inbound=bool(call.attrs.assume_inbound))
        return sliced, x.channels, x.spatial

    def _pad(self, call):
        x = self._operand(call.args[0])
        widths = [int(w) for w in call.attrs.pad_width] if x is not None else []
        if x is None or any(widths[:4]) or call.attrs.pad_mode != "constant":
            return None
        return (relax.op.nn.pad(x.var, [*widths, 0, 0], pad_value=float(call.attrs.pad_value)),
                x.channels, x.spatial)

    def _concat(self, call):
        parts = call.args[0].fields if isinstance(call.args[0], relax.Tuple) else None
        blocked = [self._operand(p) for p in parts] if parts else []
        if not blocked or any(b is None for b in blocked):
            return None
        spatial = blocked[0].spatial
        axis = int(call.attrs.axis) % (spatial + 2)
        if axis == 0 or any(b.spatial != spatial for b in blocked):
            return None
        if axis == 1:
            if any(b.padded for b in blocked):
                return None
            channels = sum(b.channels for b in blocked)
        elif len({b.channels for b in blocked}) != 1:
            return None
        else:
            channels = blocked[0].channels
        return relax.op.concat([b.var for b in blocked], axis=axis), channels, spatial


@tvm.transform.module_pass(opt_level=0, name="BlockChannels")
class BlockChannels:
    """Blocked channel layout between convs on CPU targets (module docstring); a no-op for other targets.
    ``winograd``: which Winograd tile each blocked 3x3 conv gets (passes/winograd.py ``Choose``; None: all
    direct); the chosen ones are written as blocked Winograd (passes/blocked_winograd.py). ``bands``: dilated
    convs whose outputs see real input under few taps are computed band by band in one kernel over one copy of
    the weight (blocked_kernels.banded; in the plain layout PartitionBorders splits them into a conv per band,
    each with its own cropped weight)."""

    def __init__(self, block: int | None = None, winograd=None, bands: bool = False):
        self.block, self.winograd, self.bands = block, winograd, bands

    def transform_module(self, mod, _ctx):
        target = tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "llvm":
            return mod
        from atrous.pipeline.schedules.isa import isa_of

        block = self.block or isa_of(target).block
        if block < 4:
            return mod
        blocker = _Blocker(mod, block, target, self.winograd, self.bands)
        return relax.transform.DeadCodeElimination()(blocker.transform())
