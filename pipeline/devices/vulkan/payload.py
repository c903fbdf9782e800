"""The bytes a Vulkan module serialises to, shared with runtime/src/vulkan/vulkan_module.cc.

    b"ATRSVK01" | uint32 LE header length N | N bytes of JSON | blob area (the kernels' SPIR-V, back to back)

The JSON header: ``{"version": 1, "functions": {name: KernelInfo.header(offset, size)}}``, offsets relative to
the blob area. The runtime parses it with tvm-ffi's JSON reader.
"""

from __future__ import annotations

import json
import struct

MAGIC = b"ATRSVK01"
VERSION = 1


def pack(kernels: list[tuple[object, bytes]]) -> bytes:
    """``kernels``: (KernelInfo, SPIR-V) pairs -> the module's payload."""
    functions, blobs, offset = {}, [], 0
    for info, spirv in kernels:
        if len(spirv) % 4:
            raise ValueError(f"SPIR-V of {info.name} is not a whole number of words")
        functions[info.name] = info.header(offset, len(spirv))
        blobs.append(spirv)
        offset += len(spirv)
    header = json.dumps({"version": VERSION, "functions": functions}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + b"".join(blobs)


def unpack(payload: bytes) -> tuple[dict, dict[str, bytes]]:
    """The header and each kernel's SPIR-V (for tests and inspection)."""
    if payload[:8] != MAGIC:
        raise ValueError("not an atrous Vulkan module (bad magic)")
    (size,) = struct.unpack("<I", payload[8:12])
    header = json.loads(payload[12:12 + size])
    blobs = payload[12 + size:]
    return header, {name: blobs[f["spirv"][0]:f["spirv"][0] + f["spirv"][1]]
                    for name, f in header["functions"].items()}
