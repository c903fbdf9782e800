"""Stage: ONNX -> Relax. Reads and checks the graph first, so bad files fail with a message that names the fix."""

from __future__ import annotations

from pathlib import Path

import onnx

from atrous.pipeline.errors import InputMismatchError, InvalidModelError, UnsupportedOpError, message_lines
from atrous.pipeline.fold import fold_constants

_ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
                onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.INT64: "int64",
                onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8",
                onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BOOL: "bool"}


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and structurally check an ONNX file."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # protobuf DecodeError, ValidationError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidModelError(f"{path}: not a valid ONNX model ({first}); re-export it "
                                "(torch.onnx.export) or check the file was copied completely") from err
    return model


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Every operator type in the graph (subgraphs included) that TVM's ONNX importer cannot convert."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | {"Constant", "If"}
    found = set()

    def visit(graph):
        for node in graph.node:
            if node.op_type not in known:
                found.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)

    visit(model.graph)
    return sorted(found)


def graph_inputs(model: onnx.ModelProto, shapes: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Input name -> (static shape, dtype); ``shapes`` fixes or overrides dims (key "" = the single input)."""
    initializers = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in initializers]
    if "" in shapes:
        if len(real) != 1:
            raise InputMismatchError(f"the model has {len(real)} inputs ({', '.join(i.name for i in real)}); "
                                     "name each shape: --input-shape NAME:1x3x224x224,...")
        shapes = {real[0].name: shapes[""]}
    unknown = set(shapes) - {i.name for i in real}
    if unknown:
        raise InputMismatchError(f"--input-shape names unknown input(s) {', '.join(sorted(unknown))}; "
                                 f"the model's inputs are: {', '.join(i.name for i in real)}")
    specs = {}
    for inp in real:
        tensor = inp.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise InvalidModelError(f"input '{inp.name}' has an unsupported element type {tensor.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if inp.name in shapes:
            fixed = tuple(shapes[inp.name])
            if len(fixed) != len(dims) or any(d is not None and d != f for d, f in zip(dims, fixed)):
                raise InputMismatchError(f"input '{inp.name}' has shape {_fmt(dims)} in the model; "
                                         f"{_fmt(fixed)} does not fit it")
            dims = list(fixed)
        if any(d is None for d in dims):
            raise InputMismatchError(f"input '{inp.name}' has dynamic shape {_fmt(dims)}; fix it with "
                                     f"--input-shape {inp.name}:{'x'.join(str(d or 1) for d in dims)}")
        specs[inp.name] = (tuple(dims), dtype)
    return specs


def to_relax(model: onnx.ModelProto, shapes: dict[str, tuple], source: str = "model"):
    """Convert to a Relax IRModule with weights bound as constants and the given static input shapes."""
    from tvm.relax.frontend.onnx import from_onnx

    missing = unsupported_ops(model)
    if missing:
        raise UnsupportedOpError(missing, source)
    drop_initializer_inputs(model)
    per_channel_prelu_slopes(model, shapes)
    fold_constants(model)
    try:
        return from_onnx(model, shape_dict=dict(shapes), keep_params_in_input=False)
    except Exception as err:
        lines = message_lines(err)
        raise InvalidModelError(f"{source}: TVM could not import the graph: "
                                f"{lines[-1] if lines else type(err).__name__}") from err


def drop_initializer_inputs(model: onnx.ModelProto) -> None:
    """Before ONNX IR version 4 every initializer was also listed as a graph input (AlexNet, ResNet-50 and the
    other classic files of the ONNX Model Zoo). ONNX Runtime treats such an input as a default a caller may
    override and needs only the data; TVM's importer made each one an argument of ``main`` (ResNet-50: 206, the
    data not even first). They are constants here: the compiled model takes only its real inputs."""
    initializers = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in initializers]
    if len(real) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(real)


def per_channel_prelu_slopes(model: onnx.ModelProto, shapes: dict) -> None:
    """PRelu-6 and older applied a 1-D slope per channel; from opset 7 a slope broadcasts from the last axis, and
    TVM's importer asserted on a 1-D slope that does not fit it (PyTorch's PReLU(C) exported at an old opset, or
    upgraded by ONNX's version converter, which leaves the slope as it was). Under the old rule, or where the
    slope has exactly one value per channel and cannot broadcast from the last axis, it is reshaped to
    ``[C, 1, ..]``, the per-channel form every opset reads the same way."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    initializers = {t.name: t for t in model.graph.initializer}
    ranks = {i.name: len(shapes.get(i.name, i.type.tensor_type.shape.dim)) for i in model.graph.input}
    channels = {i.name: (shapes.get(i.name) or [d.dim_value for d in i.type.tensor_type.shape.dim])
                for i in model.graph.input}
    for node in model.graph.node:
        if node.op_type != "PRelu" or node.input[1] not in initializers:
            continue
        slope = initializers[node.input[1]]
        shape = channels.get(node.input[0])
        if len(slope.dims) != 1 or shape is None or len(shape) < 3:
            continue
        fits_last = slope.dims[0] in (1, shape[-1])
        if slope.dims[0] == shape[1] and (opset < 7 or not fits_last):
            slope.dims[:] = [slope.dims[0]] + [1] * (ranks[node.input[0]] - 2)


def _fmt(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)
