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

Only GPU targets take it: the CPU presets have no fast float16 arithmetic (their reduced precision is int8), and
``check_precision`` (interface.py) refuses fp16 there before compiling.
"""

from __future__ import annotations

import tvm
from tvm import relax

ACCUMULATOR = "float16"


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
