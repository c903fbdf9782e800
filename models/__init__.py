"""The Atrous model zoo: atrous/dilated-convolution networks with seeded weights and fixed-shape presets.

Importing the package registers every family (``atrous list models`` shows them).
"""

if __name__ != "atrous.models":  # one copy of each module: the installed package is atrous.models
    raise ImportError(f"'{__name__}' is atrous.models: import atrous.models (python -m atrous.models.MODULE)")

from atrous.models import deeplabv3, deeplabv3plus, fcis, fcn, instancefcn, linknet, wavenet  # noqa: F401  (registration)
from atrous.models.flops import count_flops, count_params
from atrous.models.registry import MODELS, ModelPreset, ZooModel, get_model, register

__all__ = ["MODELS", "get_model", "ZooModel", "ModelPreset", "count_flops", "count_params", "register"]
