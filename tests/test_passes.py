"""The dilation-aware rewrites in isolation: the tap arithmetic against brute force, and what the passes change."""

import itertools

import numpy as np
import onnx
import pytest
import torch
import tvm

from pipeline.export import export_onnx
from pipeline.passes import DropDeadTaps, live_taps


def brute_force_live(size, kernel, stride, dilation, pad_lo, pad_hi):
    out = (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1
    return [t for t in range(kernel)
            if any(0 <= o * stride - pad_lo + t * dilation < size for o in range(out))]


@pytest.mark.parametrize("kernel, stride, dilation", list(itertools.product((1, 2, 3, 5), (1, 2, 3), (1, 2, 6, 18))))
def test_live_taps_match_brute_force(kernel, stride, dilation):
    for size, pad_lo, pad_hi in itertools.product((1, 4, 9, 17, 33), (0, 1, 6, 18, 36), (0, 2, 18, 36)):
        if size + pad_lo + pad_hi < dilation * (kernel - 1) + 1:
            continue
        live = brute_force_live(size, kernel, stride, dilation, pad_lo, pad_hi)
        t0, t1 = live_taps(size, kernel, stride, dilation, pad_lo, pad_hi)
        if live:
            assert (t0, t1) == (live[0], live[-1]), (size, pad_lo, pad_hi)


def _convs(module, shape):
    from pipeline.ingest import to_relax

    path = export_onnx(module, {"x": np.zeros(shape, "float32")}, ["y"], _tmp() / "m.onnx")
    mod = DropDeadTaps()(to_relax(onnx.load(str(path)), {"x": shape}))
    return [b.value for b in mod["main"].body.blocks[0].bindings if getattr(b.value.op, "name", "") == "relax.nn.conv2d"]


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def test_aspp_rate_beyond_the_map_becomes_a_1x1_conv():
    (conv,) = _convs(torch.nn.Conv2d(8, 8, 3, padding=18, dilation=18).eval(), (1, 8, 17, 17))
    assert [int(d) for d in conv.args[1].ty.shape.values] == [8, 8, 1, 1]
    assert [int(p) for p in conv.attrs.padding] == [0, 0, 0, 0]
    assert [int(d) for d in conv.attrs.dilation] == [1, 1]


def test_rate_inside_the_map_is_left_alone():
    (conv,) = _convs(torch.nn.Conv2d(8, 8, 3, padding=6, dilation=6).eval(), (1, 8, 17, 17))
    assert [int(d) for d in conv.args[1].ty.shape.values] == [8, 8, 3, 3]


def test_one_axis_cropped_other_kept():
    (conv,) = _convs(torch.nn.Conv2d(8, 8, 3, padding=(2, 12), dilation=(2, 12)).eval(), (1, 8, 9, 9))
    assert [int(d) for d in conv.args[1].ty.shape.values] == [8, 8, 3, 1]
    assert [int(d) for d in conv.attrs.dilation] == [2, 1]
