"""fp16 builds for GPU targets: convs and matmuls computed in float16 by TVM's own mixed-precision pass.

``relax.transform.ToMixedPrecision`` casts the inputs of the ops that always run in reduced precision (conv1d,
conv2d, matmul, ...) to float16 and lets the elementwise ops after them (bias adds, clips, residual adds,
resizes) follow in float16, so consecutive layers exchange float16 activations; ops it never runs in float16
(means, softmax) get float32 inputs. ``out_dtype`` is the convs' accumulator type: float16 here, so each product
and each sum of a conv is a half operation (CUDA ``__hmul``/``__hadd``, or their fused form; GLSL ``float16_t``);
"float32" would keep the loads in half but compute in float (TOPI casts both operands to the accumulator type).

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

ACCUMULATOR = "float16"

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
    """Convs and matmuls in float16 on GPU targets, float32 at the function boundary (module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=True)
        if target is None or "gpu" not in target.keys:
            raise ValueError(f"fp16 builds are for GPU targets; the current target is "
                             f"{target.kind.name if target is not None else 'none'}")
        return tvm.transform.Sequential([relax.transform.ConvertToDataflow(),
                                         relax.transform.ToMixedPrecision(out_dtype=ACCUMULATOR),
                                         relax.transform.FoldConstant()])(mod)
