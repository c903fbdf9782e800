"""GLSL -> SPIR-V with the Khronos tools from Debian: ``glslangValidator`` compiles, ``spirv-val`` validates.

A shader that fails either is a bug in the generator (or a construct it should have refused): the error shows
the validator's message and the GLSL lines around the one it names, so the report can be acted on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from atrous.pipeline.errors import ToolchainError
from atrous.pipeline.devices.vulkan.glsl import Shader, ShaderCodegenError

TOOLS = {"glslangValidator": "glslang-tools", "spirv-val": "spirv-tools"}
TARGET_ENV = "vulkan1.1"  # what lavapipe, Mali and Adreno drivers all accept


def require_tools() -> dict[str, str]:
    """Paths of the shader tools; raises naming the Debian packages when one is missing."""
    found = {tool: shutil.which(tool) for tool in TOOLS}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        packages = " ".join(sorted({TOOLS[t] for t in missing}))
        raise ToolchainError(f"compiling for a Vulkan target needs {', '.join(missing)}; "
                             f"install them with: sudo apt-get install {packages}")
    return found


def _excerpt(source: str, message: str) -> str:
    """The GLSL lines around the first line number the tool's message names (all of it if none)."""
    lines = source.splitlines()
    match = re.search(r":(\d+):", message)
    if not match:
        return "\n".join(f"{i + 1:5d}  {line}" for i, line in enumerate(lines[:60]))
    at = int(match.group(1))
    return "\n".join(f"{i + 1:5d}{'>' if i + 1 == at else ' '} {lines[i]}"
                     for i in range(max(0, at - 6), min(len(lines), at + 3)))


def compile_shader(shader: Shader, tools: dict[str, str] | None = None) -> bytes:
    """The validated SPIR-V of one shader."""
    tools = tools or require_tools()
    with tempfile.TemporaryDirectory(prefix="atrous-spirv-") as tmp:
        source, binary = Path(tmp) / "kernel.comp", Path(tmp) / "kernel.spv"
        source.write_text(shader.source)
        done = subprocess.run([tools["glslangValidator"], "-V", "--target-env", TARGET_ENV, "-S", "comp",
                               str(source), "-o", str(binary)], capture_output=True, text=True)
        if done.returncode != 0:
            message = "\n".join(line for line in done.stdout.splitlines() if "ERROR" in line) or done.stdout
            raise ShaderCodegenError(f"glslangValidator rejected the shader of kernel '{shader.info.name}':\n"
                                     f"{message.strip()}\n{_excerpt(shader.source, message)}")
        done = subprocess.run([tools["spirv-val"], "--target-env", TARGET_ENV, str(binary)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ShaderCodegenError(f"spirv-val rejected the SPIR-V of kernel '{shader.info.name}':\n"
                                     f"{(done.stderr + done.stdout).strip()}")
        return binary.read_bytes()


def compile_shaders(shaders: list[Shader]) -> list[bytes]:
    """SPIR-V for every shader, compiled in parallel (the tools are separate processes)."""
    tools = require_tools()
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        return list(pool.map(lambda s: compile_shader(s, tools), shaders))
