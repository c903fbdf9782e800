"""Atrous: a compiler for atrous (dilated) convolution networks, from PyTorch or ONNX to CPUs and GPUs at the edge.

The Python API (api.py: ``compile``, ``tune``, ``list_models``, ``list_targets``) is loaded on first use, so that
importing ``atrous.pipeline``, ``atrous.models`` or ``atrous.targets`` (the device presets) does not load it.
"""

from __future__ import annotations

__all__ = ["compile", "tune", "list_models", "list_targets", "Compiled", "Report"]


def __getattr__(name: str):
    if name in __all__:
        from atrous import api

        return getattr(api, name)
    raise AttributeError(f"module 'atrous' has no attribute {name!r}")
