"""The signature a model library carries: input/output names, dtypes and shapes, readable without Python.

The on-device runtime (``runtime/src/signature.h``) reads the C string ``atrous_signature`` from ``model.so``, so
a board needs nothing but the library to know what to feed it. The text is built here and linked into the
library as a small C++ source (an ``export_library`` addon).
"""

from __future__ import annotations

from pathlib import Path

VERSION_LINE = "atrous-signature 1"


def _encode(name: str) -> str:
    """Percent-encode what would break the one-token-per-field format."""
    return "".join(c if c.isprintable() and c not in " %\t" else "".join(f"%{b:02X}" for b in c.encode())
                   for c in name)


def _dims(shape) -> str:
    return "x".join(str(int(d)) for d in shape) if len(shape) else "scalar"


def signature_text(model: str, target: str, inputs, outputs, device: str = "") -> str:
    """``inputs``/``outputs``: sequences of ``TensorSpec`` (name, shape, dtype) in call/return order;
    ``device``: where the kernels run when not on the CPU, e.g. ``"cuda sm_87"``."""
    lines = [VERSION_LINE, f"model {_encode(model)}", f"target {_encode(target)}"]
    lines += [f"device {device}"] if device else []
    lines += [f"input {_encode(s.name)} {s.dtype} {_dims(s.shape)}" for s in inputs]
    lines += [f"output {_encode(s.name)} {s.dtype} {_dims(s.shape)}" for s in outputs]
    return "\n".join(lines) + "\n"


def write_signature_source(text: str, path: Path) -> Path:
    """A C++ file defining ``atrous_signature`` (visible to dlsym) with ``text``."""
    escaped = "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else f"\\{b:03o}" for b in text.encode())
    path.write_text('extern "C" __attribute__((visibility("default"))) const char atrous_signature[] = "'
                    + escaped + '";\n')
    return path
