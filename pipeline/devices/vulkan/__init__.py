"""The Vulkan backend's compile-time half: TIR device kernels -> GLSL (glsl.py) -> SPIR-V (spirv.py) -> one module
payload (payload.py), wired into TVM's build by backend.py. The runtime half is runtime/src/vulkan/."""
