"""Random ONNX conv nets from the vocabulary of vision and audio models, compiled by atrous and compared with
ONNX Runtime (``make fuzz N=... SEED=...``; a fixed slice and the saved corpus run in ``make test``).

``graphs()`` is a Hypothesis strategy: an input of 1-2 images (or 1-D signals) with odd and prime sizes, then a
chain of layers drawn from ``FAMILIES``: convs of every stride, dilation, group count and padding (symmetric,
asymmetric, ``auto_pad``), transposed convs, batch norms, activations, squeeze-excitation gates, residual adds and
products, concats, splits, pools (``ceil_mode`` too), resizes (each coordinate transformation the exporters emit),
pads, slices, reshapes, transposes, gathers, and a pooled Gemm head; opsets 13-18. ``check()`` builds a graph,
runs it in ONNX Runtime (a graph ONNX Runtime refuses is not a test case and is rejected), compiles it for the
host and compares. An ``AtrousError`` (a clear, one-line error such as an unsupported op) is an accepted
outcome, counted as "refused"; any other exception or a mismatch beyond tolerance is a failure. Hypothesis
shrinks a failure to a minimal graph, and ``run()`` saves that graph under ``tests/fuzz_corpus/`` with the error,
where ``tests/test_fuzz.py`` replays it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

SIZES = [1, 2, 3, 5, 7, 8, 9, 11, 13, 16, 17, 19, 23, 29, 31, 33, 37]
OPSETS = [13, 14, 15, 16, 17, 18]
CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fuzz_corpus"


@dataclass
class Graph:
    """A graph being built: nodes, initializers, the current tensor and its shape."""

    opset: int
    seed: int
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    families: list = field(default_factory=list)
    count: int = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weights(self, shape, scale: float = 1.0) -> str:
        rng = np.random.default_rng(self.seed + self.count)
        fan_in = max(1, int(np.prod(shape[1:])))
        return self.const((rng.standard_normal(shape) * scale / np.sqrt(fan_in)).astype(np.float32))

    def model(self, shape, output: str, output_shape=None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        return model

    def shape_of(self, input_shape, name: str) -> list[int]:
        """The static shape ONNX's own shape inference gives ``name`` (the layers' arithmetic is not trusted)."""
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model(input_shape, name), strict_mode=True)
        except Exception as err:  # noqa: BLE001 - an invalid layer: the graph is rejected
            raise Unusable from err
        for info in [*inferred.graph.value_info, *inferred.graph.output]:
            if info.name == name:
                dims = info.type.tensor_type.shape.dim
                if dims and all(d.HasField("dim_value") for d in dims):
                    return [d.dim_value for d in dims]
        raise Unusable

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str]:
        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, **attrs))
        return names


@dataclass
class Tensor:
    name: str
    shape: list[int]  # [N, C, H, W] or [N, C, L]

    @property
    def spatial(self) -> list[int]:
        return self.shape[2:]


# ------------------------------------------------------------------------------------------ the layers
def _out(size: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> int:
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def conv(draw, g: Graph, x: Tensor) -> Tensor:
    rank = len(x.spatial)
    channels = x.shape[1]
    groups = draw(st.sampled_from(sorted({1, channels} | {d for d in (2, 3, 4) if channels % d == 0})))
    out = groups * draw(st.integers(1, max(1, 24 // groups))) if groups > 1 else draw(st.integers(1, 24))
    if groups == channels and draw(st.booleans()):
        out = channels  # depthwise, multiplier 1
    kernel = [draw(st.sampled_from([1, 2, 3, 5])) for _ in range(rank)]
    stride = [draw(st.sampled_from([1, 1, 2, 3])) for _ in range(rank)]
    dilation = [draw(st.sampled_from([1, 1, 2, 3, 4])) for _ in range(rank)]
    attrs = {"kernel_shape": kernel, "strides": stride, "dilations": dilation, "group": groups}
    padding = draw(st.sampled_from(["explicit", "symmetric", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if padding.startswith("SAME"):  # ONNX Runtime refuses auto_pad SAME_* with dilation: no reference
        dilation = [1] * rank
        attrs["dilations"] = dilation
    if padding in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        attrs["auto_pad"] = padding
        if padding == "VALID":
            sizes = [_out(s, k, t, d, 0, 0) for s, k, t, d in zip(x.spatial, kernel, stride, dilation)]
        else:
            sizes = [-(-s // t) for s, t in zip(x.spatial, stride)]
    else:
        before = [draw(st.integers(0, 4)) for _ in range(rank)]
        after = before if padding == "symmetric" else [draw(st.integers(0, 4)) for _ in range(rank)]
        attrs["pads"] = before + after
        sizes = [_out(*a) for a in zip(x.spatial, kernel, stride, dilation, before, after)]
    _require(all(s >= 1 for s in sizes))
    w = g.weights([out, channels // groups, *kernel])
    bias = [g.const(np.linspace(-0.5, 0.5, out, dtype=np.float32), "b")] if draw(st.booleans()) else []
    inputs = [x.name, w] + bias
    return Tensor(g.node("Conv", inputs, **attrs)[0], [x.shape[0], out, *sizes])


def conv_transpose(draw, g: Graph, x: Tensor) -> Tensor:
    rank = len(x.spatial)
    channels, out = x.shape[1], draw(st.integers(1, 16))
    stride = draw(st.sampled_from([1, 2, 3]))
    kernel = draw(st.integers(max(1, stride - 1), 4))
    pad = draw(st.integers(0, max(0, kernel - 1)))
    extra = draw(st.integers(0, stride - 1)) if stride > 1 else 0
    sizes = [(s - 1) * stride - 2 * pad + kernel + extra for s in x.spatial]
    _require(all(s >= 1 for s in sizes))
    w = g.weights([channels, out, *[kernel] * rank])
    y = g.node("ConvTranspose", [x.name, w], kernel_shape=[kernel] * rank, strides=[stride] * rank,
               pads=[pad] * (2 * rank), output_padding=[extra] * rank)[0]
    return Tensor(y, [x.shape[0], out, *sizes])


def batch_norm(draw, g: Graph, x: Tensor) -> Tensor:
    c = x.shape[1]
    rng = np.random.default_rng(g.seed + 7 * g.count)
    params = [rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c), rng.uniform(-0.5, 0.5, c), rng.uniform(0.5, 2, c)]
    names = [g.const(p.astype(np.float32), "bn") for p in params]
    return Tensor(g.node("BatchNormalization", [x.name, *names], epsilon=1e-5)[0], x.shape)


def activation(draw, g: Graph, x: Tensor) -> Tensor:
    kind = draw(st.sampled_from(["Relu", "Relu6", "LeakyRelu", "PRelu", "HardSwish", "HardSigmoid", "SiLU", "GELU",
                                 "Sigmoid", "Tanh", "Clip"]))
    if kind == "Relu6" or kind == "Clip":
        low, high = (0.0, 6.0) if kind == "Relu6" else sorted(draw(st.tuples(st.floats(-2, 0), st.floats(0.1, 3))))
        y = g.node("Clip", [x.name, g.const(np.float32(low), "lo"), g.const(np.float32(high), "hi")])[0]
    elif kind == "LeakyRelu":
        y = g.node("LeakyRelu", [x.name], alpha=draw(st.sampled_from([0.01, 0.1, 0.2])))[0]
    elif kind == "PRelu":
        per_channel = draw(st.booleans())
        slope = np.linspace(0.05, 0.3, x.shape[1] if per_channel else 1, dtype=np.float32)
        y = g.node("PRelu", [x.name, g.const(slope.reshape([-1] + [1] * len(x.spatial)), "slope")])[0]
    elif kind == "HardSwish" and g.opset >= 14:
        y = g.node("HardSwish", [x.name])[0]
    elif kind in ("HardSigmoid", "HardSwish"):
        y = g.node("HardSigmoid", [x.name], alpha=1 / 6, beta=0.5)[0]
    elif kind == "SiLU":
        y = g.node("Mul", [x.name, g.node("Sigmoid", [x.name])[0]])[0]
    elif kind == "GELU":  # x * 0.5 * (1 + erf(x / sqrt 2)), as exporters write it before opset 20
        e = g.node("Erf", [g.node("Div", [x.name, g.const(np.float32(np.sqrt(2)), "c")])[0]])[0]
        half = g.node("Mul", [x.name, g.const(np.float32(0.5), "c")])[0]
        y = g.node("Mul", [half, g.node("Add", [e, g.const(np.float32(1.0), "c")])[0]])[0]
    else:
        y = g.node(kind, [x.name])[0]
    return Tensor(y, x.shape)


def squeeze_excite(draw, g: Graph, x: Tensor) -> Tensor:
    c, rank = x.shape[1], len(x.spatial)
    hidden = max(1, c // draw(st.sampled_from([2, 4])))
    pooled = g.node("GlobalAveragePool", [x.name])[0]
    h = g.node("Relu", [g.node("Conv", [pooled, g.weights([hidden, c, *[1] * rank])], kernel_shape=[1] * rank)[0]])[0]
    s = g.node("Conv", [h, g.weights([c, hidden, *[1] * rank])], kernel_shape=[1] * rank)[0]
    gate = g.node("HardSigmoid" if draw(st.booleans()) else "Sigmoid", [s])[0]
    return Tensor(g.node("Mul", [x.name, gate])[0], x.shape)


def residual(draw, g: Graph, x: Tensor) -> Tensor:
    rank = len(x.spatial)
    y = g.node("Conv", [x.name, g.weights([x.shape[1], x.shape[1], *[3] * rank])], kernel_shape=[3] * rank,
               pads=[1] * (2 * rank))[0]
    return Tensor(g.node(draw(st.sampled_from(["Add", "Mul", "Sub"])), [x.name, y])[0], x.shape)


def concat(draw, g: Graph, x: Tensor) -> Tensor:
    rank = len(x.spatial)
    extra = draw(st.integers(1, 12))
    y = g.node("Conv", [x.name, g.weights([extra, x.shape[1], *[1] * rank])], kernel_shape=[1] * rank)[0]
    return Tensor(g.node("Concat", [x.name, y], axis=1)[0], [x.shape[0], x.shape[1] + extra, *x.spatial])


def split(draw, g: Graph, x: Tensor) -> Tensor:
    c = x.shape[1]
    _require(c >= 2)
    first = draw(st.integers(1, c - 1))
    sizes = g.const(np.array([first, c - first], dtype=np.int64), "split")
    a, b = g.node("Split", [x.name, sizes], outputs=2, axis=1)
    return Tensor(g.node("Concat", [g.node("Relu", [b])[0], a], axis=1)[0], x.shape)


def pool(draw, g: Graph, x: Tensor) -> Tensor:
    rank = len(x.spatial)
    kind = draw(st.sampled_from(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]))
    if kind.startswith("Global"):
        return Tensor(g.node(kind, [x.name])[0], [*x.shape[:2], *[1] * rank])
    kernel, stride = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = draw(st.integers(0, kernel // 2))
    ceil = draw(st.booleans())
    attrs = {"kernel_shape": [kernel] * rank, "strides": [stride] * rank, "pads": [pad] * (2 * rank),
             "ceil_mode": int(ceil)}
    if kind == "AveragePool":
        attrs["count_include_pad"] = int(draw(st.booleans()))
    rounding = (lambda v: -(-v // 1)) if ceil else int
    sizes = [int(rounding((s + 2 * pad - kernel) / stride)) + 1 for s in x.spatial]
    if ceil:  # the last window must start inside the input or its left padding
        sizes = [n - 1 if (n - 1) * stride >= s + pad else n for n, s in zip(sizes, x.spatial)]
    _require(all(s >= 1 for s in sizes))
    return Tensor(g.node(kind, [x.name], **attrs)[0], [*x.shape[:2], *sizes])


def resize(draw, g: Graph, x: Tensor) -> Tensor:
    mode = draw(st.sampled_from(["nearest", "linear"]))
    transform = draw(st.sampled_from(["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"]))
    sizes = [draw(st.sampled_from([max(1, s // 2), s + 1, 2 * s, 3 * s])) for s in x.spatial]
    _require(all(1 <= s <= 80 for s in sizes))
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    if mode == "nearest":
        attrs["nearest_mode"] = draw(st.sampled_from(["round_prefer_floor", "floor", "round_prefer_ceil"]))
    target = g.const(np.array([*x.shape[:2], *sizes], dtype=np.int64), "sizes")
    y = g.node("Resize", [x.name, "", "", target], **attrs)[0]
    return Tensor(y, [*x.shape[:2], *sizes])


def pad(draw, g: Graph, x: Tensor) -> Tensor:
    rank = len(x.spatial)
    mode = draw(st.sampled_from(["constant", "reflect", "edge"]))
    widths = [draw(st.integers(0, 3)) for _ in range(2 * rank)]
    if mode == "reflect":
        _require(all(w < s for w, s in zip(widths, x.spatial * 2)))
    pads = g.const(np.array([0, 0, *widths[:rank], 0, 0, *widths[rank:]], dtype=np.int64), "pads")
    y = g.node("Pad", [x.name, pads, g.const(np.float32(0.25), "value")] if mode == "constant" else [x.name, pads],
               mode=mode)[0]
    return Tensor(y, [*x.shape[:2], *[s + a + b for s, a, b in zip(x.spatial, widths[:rank], widths[rank:])]])


def slice_(draw, g: Graph, x: Tensor) -> Tensor:
    axis = draw(st.integers(2, 1 + len(x.spatial)))
    size = x.shape[axis]
    step = draw(st.sampled_from([1, 1, 2]))
    start = draw(st.integers(0, max(0, size - 1)))
    end = draw(st.integers(start + 1, size)) if start < size else size
    length = len(range(start, end, step))
    _require(length >= 1)
    names = [g.const(np.array([v], dtype=np.int64), "s") for v in (start, end, axis, step)]
    shape = list(x.shape)
    shape[axis] = length
    return Tensor(g.node("Slice", [x.name, *names])[0], shape)


def reshape_transpose(draw, g: Graph, x: Tensor) -> Tensor:
    rank = len(x.shape)
    if draw(st.booleans()):  # flatten the image, then back
        flat = g.node("Reshape", [x.name, g.const(np.array([x.shape[0], x.shape[1], -1], dtype=np.int64), "shape")])[0]
        return Tensor(g.node("Reshape", [flat, g.const(np.array(x.shape, dtype=np.int64), "shape")])[0], x.shape)
    perm = [0, *range(2, rank), 1]  # channels last, then back
    y = g.node("Transpose", [x.name], perm=perm)[0]
    return Tensor(g.node("Transpose", [y], perm=[perm.index(i) for i in range(rank)])[0], x.shape)


def gather(draw, g: Graph, x: Tensor) -> Tensor:
    c = x.shape[1]
    indices = draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c))
    y = g.node("Gather", [x.name, g.const(np.array(indices, dtype=np.int64), "idx")], axis=1)[0]
    return Tensor(y, [x.shape[0], len(indices), *x.spatial])


FAMILIES = {"conv": conv, "conv_transpose": conv_transpose, "batch_norm": batch_norm, "activation": activation,
            "squeeze_excite": squeeze_excite, "residual": residual, "concat": concat, "split": split, "pool": pool,
            "resize": resize, "pad": pad, "slice": slice_, "reshape_transpose": reshape_transpose, "gather": gather}


class Unusable(Exception):
    """A drawn layer that does not fit the tensor (an empty output, a too large map): the graph is rejected."""


def _require(condition: bool) -> None:
    if not condition:
        raise Unusable


def head(g: Graph, x: Tensor) -> Tensor:
    """A classifier head: global average pool, flatten, Gemm."""
    pooled = g.node("GlobalAveragePool", [x.name])[0]
    flat = g.node("Flatten", [pooled], axis=1)[0]
    classes = 5
    y = g.node("Gemm", [flat, g.weights([classes, x.shape[1]]), g.const(np.zeros(classes, np.float32), "b")],
               transB=1)[0]
    return Tensor(y, [x.shape[0], classes])


@st.composite
def graphs(draw):
    """(ModelProto, input shape, families used)."""
    g = Graph(opset=draw(st.sampled_from(OPSETS)), seed=draw(st.integers(0, 2 ** 16)))
    rank = draw(st.sampled_from([2, 2, 2, 1]))
    spatial = [draw(st.sampled_from(SIZES[4:])) for _ in range(rank)]
    shape = [draw(st.sampled_from([1, 1, 2])), draw(st.integers(1, 16)), *spatial]
    x = Tensor("x", shape)
    for _ in range(draw(st.integers(1, 5))):
        family = draw(st.sampled_from(sorted(FAMILIES)))
        kept = (list(g.nodes), list(g.initializers))
        try:
            y = FAMILIES[family](draw, g, x)
            y = Tensor(y.name, g.shape_of(shape, y.name))
            _require(int(np.prod(y.shape)) <= 400_000 and min(y.shape) >= 1)
        except Unusable:
            g.nodes, g.initializers = kept  # the layer does not fit: left out
            continue
        g.families.append(family)
        x = y
    if draw(st.integers(0, 4)) == 0:
        x = head(g, x)
        g.families.append("head")
    return g.model(shape, x.name, x.shape), shape, tuple(g.families)


# ------------------------------------------------------------------------------------------- checking
@dataclass
class Outcome:
    status: str  # "ok", "refused" (a clear AtrousError), "invalid" (ONNX Runtime refused the graph)
    detail: str = ""


def check(model: onnx.ModelProto, shape, target: str = "host", build_root: Path | None = None) -> Outcome:
    """Compile ``model`` for ``target`` and compare with ONNX Runtime; raises on a crash or a mismatch."""
    import onnxruntime as ort

    from atrous import targets
    from atrous.pipeline import artifact as art
    from atrous.pipeline import source
    from atrous.pipeline.errors import AtrousError, CompilerBugError, VerificationError
    from atrous.pipeline.interface import CompileArgs, compile_model, require_ok, verify_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        options = ort.SessionOptions()
        options.log_severity_level = 4  # a graph it refuses is rejected quietly
        try:
            onnx.checker.check_model(model, full_check=True)
            theirs = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        except Exception as err:  # noqa: BLE001 - not a valid test case: ONNX or ONNX Runtime refuses it
            return Outcome("invalid", str(err).splitlines()[0][:200] if str(err) else type(err).__name__)
        preset = targets.get_target(target)
        root = build_root or Path(tmp) / "build"
        if build_root is None:  # bundles and the Vulkan backend take the runtime from the build root: the shared one
            shared = art.BUILD_ROOT / "runtime"
            shared.mkdir(parents=True, exist_ok=True)
            root.mkdir()
            (root / "runtime").symlink_to(shared.resolve(), target_is_directory=True)
        src = source.from_onnx_file(path)
        src = source.Source(src.name, {"x": x}, src.output_names, onnx_path=path)
        try:
            artifact = compile_model(CompileArgs(src, preset, root, tuned=False, force=True))
            require_ok(verify_model(artifact, preset))
        except VerificationError:
            if target != "host" or not _closer_to_float64(model, artifact, x, theirs, preset.tolerance):
                raise
            return Outcome("ok", "ONNX Runtime's rounding: atrous is closer to the float64 result")
        except CompilerBugError:
            raise
        except AtrousError as err:
            return Outcome("refused", str(err).splitlines()[0][:200])
    return Outcome("ok")


def _closer_to_float64(model: onnx.ModelProto, artifact, x: np.ndarray, theirs: list, tolerance) -> bool:
    """The tie-break of a mismatch: ONNX Runtime is an fp32 computation too, and an output that cancels (a sum of
    terms ~1 ending near 0) is rounded by both. The graph is evaluated in float64 by ONNX's reference evaluator;
    atrous passes if every output is within the tolerance of that result or closer to it than ONNX Runtime's
    outputs ``theirs`` are."""
    from onnx.reference import ReferenceEvaluator

    from atrous.pipeline.runner import CompiledModel

    try:
        exact = ReferenceEvaluator(_in_float64(model)).run(None, {"x": x.astype(np.float64)})
    except Exception:  # noqa: BLE001 - no float64 evaluation: the mismatch stands
        return False
    names = [o.name for o in model.graph.output]
    ours = CompiledModel(artifact).run({"x": x})

    def rel_l2(actual, expected):
        return float(np.linalg.norm(actual.astype(np.float64) - expected) / max(np.linalg.norm(expected), 1e-30))

    return all(rel_l2(ours[n], e) <= max(tolerance.rel_l2, rel_l2(t, e)) for n, t, e in zip(names, theirs, exact))


def _in_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with every float32 tensor (input, output, initializer) in float64."""
    from onnx import TensorProto, numpy_helper

    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    graph = wide.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64),
                                                                  init.name))
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    del graph.value_info[:]
    return wide


def fingerprint(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString()).hexdigest()[:12]


def save_failure(model: onnx.ModelProto, shape, families, error: BaseException, corpus: Path = CORPUS) -> Path:
    """The failing graph and what went wrong, as a regression case of tests/test_fuzz.py."""
    corpus.mkdir(parents=True, exist_ok=True)
    stem = f"{'-'.join(dict.fromkeys(families)) or 'input'}-{fingerprint(model)}"
    onnx.save(model, str(corpus / f"{stem}.onnx"))
    (corpus / f"{stem}.json").write_text(json.dumps({"shape": list(shape), "families": list(families),
                                                     "error": f"{type(error).__name__}: {str(error)[:500]}"},
                                                    indent=1) + "\n")
    return corpus / f"{stem}.onnx"


# ----------------------------------------------------------------------------------------------- make fuzz
def also_checked(model: onnx.ModelProto, share: float) -> bool:
    """Whether a graph is one of the ``share`` also compiled for the other targets (by its fingerprint, so the
    same graph is chosen again when Hypothesis replays or shrinks it)."""
    return share > 0 and int(fingerprint(model), 16) % max(1, round(1 / share)) == 0


def run(examples: int, seed: int, corpus: Path = CORPUS, stats: Counter | None = None,
        survey: bool = False, also: tuple[str, ...] = (), share: float = 0.1) -> Counter:
    """Check ``examples`` graphs drawn with ``seed``; a failure is shrunk by Hypothesis and saved to ``corpus``
    (then raised). Returns counts per (family, outcome). ``survey``: count failures ("crash": an exception that
    is not an AtrousError, "mismatch") and go on, without shrinking or saving: pass rates. ``also``: targets
    (e.g. rpi4 under qemu, vulkan-desktop) that a ``share`` of the graphs valid for the host are compiled and
    verified for too, counted as rows "@target"."""
    from hypothesis import HealthCheck, Phase, given, reject, settings
    from hypothesis import seed as seeded
    from hypothesis.control import current_build_context

    stats = Counter() if stats is None else stats
    progress = Counter()

    @seeded(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink, Phase.explain])
    @given(graphs())
    def one(case):
        model, shape, families = case
        extra = also if also_checked(model, share) else ()
        try:
            outcome = check(model, shape)
            for target in extra if outcome.status == "ok" else ():
                stats[(f"@{target}", check(model, shape, target).status)] += 1
        except Exception as err:
            if survey:
                kind = "mismatch" if type(err).__name__ == "VerificationError" else "crash"  # CompilerBugError too
                for family in set(families) or {"input"}:
                    stats[(family, kind)] += 1
                stats[("error: " + f"{type(err).__name__}: {_last_line(err)}"[:150], kind)] += 1
                return
            if current_build_context().is_final:  # the shrunk example, run once more at the end
                path = save_failure(model, shape, families, err, corpus)
                print(f"atrous fuzz: saved the minimal failing graph to {path}", file=sys.stderr)
            raise
        if outcome.status == "invalid":
            reject()
        for family in set(families) or {"input"}:
            stats[(family, outcome.status)] += 1
        progress[outcome.status] += 1
        if sum(progress.values()) % PROGRESS_EVERY == 0:
            print(f"atrous fuzz (seed {seed}): {sum(progress.values())}/{examples} graphs, "
                  + ", ".join(f"{n} {s}" for s, n in sorted(progress.items())), file=sys.stderr, flush=True)

    one()
    return stats


def _last_line(err: BaseException) -> str:
    from atrous.pipeline.errors import message_lines

    lines = message_lines(err)
    return lines[-1][:120] if lines else ""


OUTCOMES = ("ok", "refused", "crash", "mismatch")
PROGRESS_EVERY = 25  # graphs between two progress lines of a fuzz process


def report(stats: Counter) -> str:
    """Per family: graphs containing it by outcome, and the share that passed (ok or clearly refused); then the
    distinct errors of a survey."""
    families = sorted({f for f, _ in stats if not f.startswith("error: ")}, key=lambda f: (f.startswith("@"), f))
    lines = [f"{'family':<18} " + " ".join(f"{o:>8}" for o in OUTCOMES) + f" {'pass':>6}"]
    for family in families:
        counts = [stats[(family, o)] for o in OUTCOMES]
        passed = (counts[0] + counts[1]) / max(1, sum(counts))
        lines.append(f"{family:<18} " + " ".join(f"{c:>8}" for c in counts) + f" {passed:>6.0%}")
    errors = sorted(((n, f) for (f, _), n in stats.items() if f.startswith("error: ")), reverse=True)
    lines += [f"{n:>5}x {f[len('error: '):]}" for n, f in errors]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m atrous.pipeline.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=100, help="graphs to check (Hypothesis max_examples)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1,
                   help="processes, each checking examples/workers graphs with its own seed (seed, seed+1, ...)")
    p.add_argument("--corpus", default=str(CORPUS), help="where a shrunk failing graph is saved")
    p.add_argument("--json", action="store_true", help="print the counts as JSON (what workers report)")
    p.add_argument("--survey", action="store_true",
                   help="count failures and go on (no shrinking, nothing saved): pass rates by family")
    p.add_argument("--also", default="", help="comma-separated targets a share of the graphs is also verified "
                   "for, e.g. rpi4 (under qemu) and vulkan-desktop (on lavapipe)")
    p.add_argument("--share", type=float, default=0.1, help="share of the graphs checked on --also targets")
    args = p.parse_args(argv)
    if args.workers > 1:
        return _parallel(args)
    stats = Counter()
    failed = None
    try:
        run(args.examples, args.seed, Path(args.corpus), stats, args.survey, _targets(args.also), args.share)
    except Exception as err:  # noqa: BLE001 - reported, and the exit status says so
        failed = err
    if args.json:
        print(json.dumps([[f, s, n] for (f, s), n in stats.items()]))
    else:
        print(report(stats))
    if failed is not None:
        print(f"atrous fuzz: a graph failed (seed {args.seed}): {type(failed).__name__}: {str(failed)[:300]}",
              file=sys.stderr)
        return 1
    return 0


def _targets(names: str) -> tuple[str, ...]:
    from atrous import targets

    chosen = tuple(n for n in names.split(",") if n)
    for name in chosen:
        targets.get_target(name)  # an unknown name is refused here, with the valid ones listed
    return chosen


def _parallel(args) -> int:
    """``args.workers`` fuzz processes side by side (compiling is mostly one core's work)."""
    import subprocess

    share = -(-args.examples // args.workers)
    procs = [subprocess.Popen([sys.executable, "-m", "atrous.pipeline.fuzz", "--examples", str(share), "--seed",
                               str(args.seed + k), "--corpus", args.corpus, "--json", "--also", args.also,
                               "--share", str(args.share),
                               *(["--survey"] if args.survey else [])], stdout=subprocess.PIPE,
                              text=True) for k in range(args.workers)]
    stats, status = Counter(), 0
    for proc in procs:
        out, _ = proc.communicate()
        status = status or proc.returncode
        for family, outcome, count in json.loads(out.strip().splitlines()[-1] if out.strip() else "[]"):
            stats[(family, outcome)] += count
    print(report(stats))
    return status


if __name__ == "__main__":
    sys.exit(main())
