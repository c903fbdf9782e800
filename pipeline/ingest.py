"""Stage: ONNX -> Relax. Reads and checks the graph first, so bad files fail with a message that names the fix."""

from __future__ import annotations

from pathlib import Path

import onnx

from .errors import InputMismatchError, InvalidModelError, UnsupportedOpError
from .fold import fold_constants

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
    fold_constants(model)
    try:
        return from_onnx(model, shape_dict=dict(shapes), keep_params_in_input=False)
    except Exception as err:
        raise InvalidModelError(f"{source}: TVM could not import the graph: {str(err).strip().splitlines()[-1]}"
                                ) from err


def _fmt(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)
