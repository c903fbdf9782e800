"""Stage: PyTorch -> ONNX, with fixed shapes and a pinned opset."""

from __future__ import annotations

import warnings
from pathlib import Path

OPSET = 17


def export_onnx(module, inputs: dict, output_names, path: Path) -> Path:
    """Trace ``module`` on ``inputs`` (name -> ndarray, in forward() order) and write ``path``."""
    import torch

    args = tuple(torch.from_numpy(v) for v in inputs.values())
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(inputs), output_names=list(output_names),
                          do_constant_folding=True)
    return path
