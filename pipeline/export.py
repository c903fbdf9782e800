"""Stage: PyTorch -> ONNX with fixed shapes, by PyTorch's torch.export-based exporter, else its TorchScript one.

``torch.onnx.export(..., dynamo=True)`` has been PyTorch's default since 2.9 (the TorchScript exporter is
deprecated); it needs onnxscript and emits other patterns than the TorchScript one (a recent opset, batch norms
folded into the convs). A module it cannot export (an op torch.export does not trace, a data-dependent branch)
falls back to the TorchScript exporter, and the reason is kept: ``Exported.fallback``. Either way the graph is
written self-contained (weights inside the file, not beside it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx

from atrous.pipeline.ingest import load_onnx

OPSET = 17  # the TorchScript exporter's opset (the dynamo exporter picks its own, the latest it supports)
EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class Exported:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    fallback: str | None = None  # why the dynamo exporter was not used, when it was asked for


def export_onnx(module, inputs: dict, output_names, path: Path, exporter: str = "dynamo") -> Exported:
    """Export ``module`` on ``inputs`` (name -> ndarray, in forward() order) to ``path``."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r} is not one of {EXPORTERS}")
    if exporter == "dynamo":
        try:
            _export(module, inputs, output_names, path, dynamo=True)
            return Exported(path, "dynamo")
        except Exception as err:  # noqa: BLE001 - any failure of the new exporter falls back, with its reason
            reason = _reason(err)
    _export(module, inputs, output_names, path, dynamo=False)
    return Exported(path, "torchscript", reason if exporter == "dynamo" else None)


def _export(module, inputs: dict, output_names, path: Path, dynamo: bool) -> None:
    import torch

    args = tuple(torch.from_numpy(v) for v in inputs.values())
    options = ({"external_data": False, "optimize": True, "verbose": False} if dynamo
               else {"opset_version": OPSET, "do_constant_folding": True})
    with (torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), _quiet_torch_logs(),
          contextlib.redirect_stdout(io.StringIO())):  # the dynamo exporter prints its progress
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, args, str(path), dynamo=dynamo, input_names=list(inputs),
                          output_names=list(output_names), **options)


def _quiet_torch_logs():
    """The dynamo exporter logs a warning for each torchvision op it cannot register (torchvision is not a
    dependency) on every export; errors still reach the log."""
    return quiet_logger("torch.onnx")


@contextlib.contextmanager
def quiet_logger(name: str | None = None):
    """Only errors from the logger ``name`` (None: the root logger) while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reason(err: Exception) -> str:
    from atrous.pipeline.errors import message_lines

    lines = message_lines(err)
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def write_onnx(source, path: Path, exporter: str = "dynamo") -> Exported:
    """The model as one self-contained ONNX file at ``path``: a user's file copied (weights stored beside it, as
    the dynamo exporter and large models do, brought inside; over protobuf's 2 GB, beside the copy), a PyTorch
    module exported."""
    if source.onnx_path is None:
        return export_onnx(source.module(), source.inputs, source.output_names, path, exporter)
    model = load_onnx(source.onnx_path)  # reads external data from beside the file
    if model.ByteSize() < PROTOBUF_LIMIT:
        onnx.save(model, str(path))
    else:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    return Exported(path, "file")


PROTOBUF_LIMIT = 2_000_000_000  # bytes: protobuf's limit for one message
