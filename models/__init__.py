"""The Atrous model zoo: atrous/dilated-convolution networks with seeded weights and fixed-shape presets.

Importing the package registers every family (``atrous list models`` shows them).
"""

from . import deeplabv3, deeplabv3plus, fcis, fcn, instancefcn, linknet, wavenet  # noqa: F401  (registration)
from .flops import count_flops, count_params
from .registry import MODELS, ModelPreset, ZooModel, get_model, register

__all__ = ["MODELS", "get_model", "ZooModel", "ModelPreset", "count_flops", "count_params", "register"]
