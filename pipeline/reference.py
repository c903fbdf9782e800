"""Reference outputs: the original PyTorch model, and ONNX Runtime as a second opinion."""

from __future__ import annotations

import numpy as np


def pytorch_outputs(module, inputs: dict[str, np.ndarray], output_names) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        result = module(*(torch.from_numpy(v) for v in inputs.values()))
    values = result if isinstance(result, (tuple, list)) else (result,)
    return {n: v.detach().numpy() for n, v in zip(output_names, values)}


def onnxruntime_session(onnx_path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a refusal reaches the caller as the exception; its log would repeat it
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def onnxruntime_outputs(onnx_path, inputs: dict[str, np.ndarray], threads: int | None = None) -> dict:
    session = onnxruntime_session(onnx_path, threads)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))
