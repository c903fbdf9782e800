"""Devices: where a model runs (address.py), running it there (device.py: here, under an emulator, over ssh, or
over RPC with rpc.py), the on-device bundle and runtime library (bundle.py, runtime_build.py), and the GPU
backends (cuda.py, vulkan/, gpupack.py)."""
