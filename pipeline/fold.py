"""ONNX-level constant folding before import.

Exporters leave small constant-only subgraphs in place (the TorchScript exporter computes ``F.pad``'s pads with a
ConstantOfShape/Concat/Slice/Cast chain), and TVM's importer needs such inputs as constants ("Dynamic pads are not
supported yet"). Nodes whose inputs are all constant are evaluated with ONNX's reference evaluator, so the op
semantics are ONNX's own, and replaced by initializers. Large results are left alone (no weight blow-up), and so
are DequantizeLinear nodes: a QDQ graph's int8 weights stay int8 for passes/integer_convs.py.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

MAX_FOLDED_ELEMENTS = 1 << 16
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}


def _opset(model: onnx.ModelProto) -> dict[str, int]:
    return {o.domain or "": o.version for o in model.opset_import}


def _foldable(node: onnx.NodeProto, constants: dict) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC or node.op_type == "DequantizeLinear":
        return False
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return False
    return all(not name or name in constants for name in node.input)


def fold_constants(model: onnx.ModelProto) -> int:
    """Fold constant-only nodes of the main graph in place; returns how many nodes were removed."""
    from onnx.reference import ReferenceEvaluator

    graph, opsets = model.graph, _opset(model)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    kept, folded = [], 0
    for node in graph.node:
        if not _foldable(node, constants) or graph_outputs.intersection(node.output):
            kept.append(node)
            continue
        feeds = {name: constants[name] for name in node.input if name}
        values = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
        if any(getattr(v, "size", 0) > MAX_FOLDED_ELEMENTS for v in values):
            kept.append(node)
            continue
        for name, value in zip(node.output, values):
            constants[name] = value
            graph.initializer.append(numpy_helper.from_array(value, name))
        folded += 1
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_initializers(graph)
    return folded


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
