"""TVM's build calls back into Python through named global functions; a build installs its own for its duration."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def registered(name: str, function):
    """``function`` is TVM's global ``name`` inside the block; afterwards the previous one (or none) is back, so
    no hook bound to one build's settings outlives that build."""
    import tvm_ffi

    previous = tvm_ffi.get_global_func(name, allow_missing=True)
    tvm_ffi.register_global_func(name, function, override=True)
    try:
        yield
    finally:
        if previous is not None:
            tvm_ffi.register_global_func(name, previous, override=True)
        else:
            tvm_ffi.remove_global_func(name)
