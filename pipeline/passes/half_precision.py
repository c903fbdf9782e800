"""fp16 builds for GPU targets: activations and weights in float16, by TVM's own mixed-precision pass.

``relax.transform.ToMixedPrecision`` casts the inputs of the ops that always run in reduced precision (conv1d,
conv2d, matmul, ...) to float16 and lets the elementwise ops after them (bias adds, clips, residual adds,
resizes) follow in float16, so consecutive layers exchange float16 activations and the epilogues are half
arithmetic; ops it never runs in float16 (means, softmax) get float32 inputs.

``out_dtype`` is the convs' accumulator (``ACCUMULATOR``). float32: each conv loads float16 operands, converts
them, multiplies and sums in float, and rounds its sum to float16 once (TOPI casts both operands to the
accumulator type). A float16 accumulator (every product and sum a half operation) rounds at every add, and the
error grows with the length of the sum: simulated on ReLU activations and unit-variance weights, one dot product
of K terms is off by rel-L2 5.6e-4 (K = 32), 4.2e-3 (K = 1152) and 9.2e-3 (K = 4608, a 3x3 conv over 512
channels, as in ResNet-50's last stage; DeepLabV3's ASPP sums 18432), against 2e-4 at any K with a float32
accumulator. On lavapipe the tiny InstanceFCN's objectness output reached rel-L2 9.7e-3 with float16 sums and
2.1e-3 with float32 ones: float16 sums would fail the fp16 criterion (rel-L2 <= 1e-2) on the standard models.

The function's parameters and results keep their float32 type (the pass casts at the boundary), so the runtime,
the golden data and the verification of an fp16 build are those of an fp32 one. Weights are constants: the
FoldConstant after the pass stores them as float16.

Only GPU targets take it, where the device has float16 arithmetic (``fp16_problem``: CUDA sm_53+, Vulkan
``shaderFloat16`` and ``storageBuffer16BitAccess``); the CPU presets' reduced precision is int8.
``check_precision`` (interface.py) refuses the others before compiling.
"""

from __future__ import annotations

import tvm
from tvm import relax

ACCUMULATOR = "float32"  # see the module docstring

FP16_MIN_SM = 53  # CUDA: float16 arithmetic instructions from compute capability 5.3


def fp16_problem(preset) -> str | None:
    """Why ``preset`` cannot run fp16 kernels (this pass), or None if it can."""
    target = preset.target_dict()
    if target["kind"] == "cuda":
        sm = target["arch"]
        return None if int(sm.removeprefix("sm_")) >= FP16_MIN_SM else (
            f"'{preset.name}' is {sm}; float16 arithmetic needs sm_{FP16_MIN_SM} or newer: compile it in fp32")
    if target["kind"] == "vulkan":
        missing = [feature for feature, attr in (("shaderFloat16", "supports_float16"),
                                                 ("storageBuffer16BitAccess", "supports_16bit_buffer"))
                   if not target.get(attr)]
        return None if not missing else (f"the Vulkan target '{preset.name}' does not declare "
                                         f"{' and '.join(missing)}, which float16 kernels need: compile it in fp32")
    return (f"'{preset.name}' is a CPU target; fp16 has kernels for GPU presets (CUDA, Vulkan) only, and the CPU "
            "presets' reduced precision is int8: use --precision int8, or fp32")


@tvm.transform.module_pass(opt_level=0, name="atrous.HalfPrecision")
class HalfPrecision:
    """float16 activations and weights on GPU targets, float32 at the function boundary (module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=True)
        if target is None or "gpu" not in target.keys:
            raise ValueError(f"fp16 builds are for GPU targets; the current target is "
                             f"{target.kind.name if target is not None else 'none'}")
        return tvm.transform.Sequential([relax.transform.ConvertToDataflow(),
                                         relax.transform.ToMixedPrecision(out_dtype=ACCUMULATOR),
                                         relax.transform.FoldConstant()])(mod)
