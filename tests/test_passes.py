"""The dilation-aware rewrites in isolation: the tap arithmetic against brute force, and what the passes change."""

import itertools

import numpy as np
import onnx
import pytest
import torch
import tvm

from atrous.pipeline.export import export_onnx
from atrous.pipeline.passes import DropDeadTaps, PartitionBorders, bands, live_taps


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


def _convs(module, shape, passes=(DropDeadTaps(),)):
    from atrous.pipeline.ingest import to_relax

    path = export_onnx(module, {"x": np.zeros(shape, "float32")}, ["y"], _tmp() / "m.onnx").path
    mod = tvm.transform.Sequential(list(passes))(to_relax(onnx.load(str(path)), {"x": shape}))
    bindings = mod["main"].body.blocks[0].bindings
    return [b.value for b in bindings if getattr(b.value.op, "name", "") == "relax.nn.conv2d"]


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


@pytest.mark.parametrize("kernel, dilation", list(itertools.product((2, 3, 5), (2, 3, 6, 12))))
def test_bands_match_brute_force(kernel, dilation):
    for size, pad_lo, pad_hi in itertools.product((5, 9, 17, 33), (0, 2, 6, 12), (0, 3, 6, 12)):
        out = size + pad_lo + pad_hi - dilation * (kernel - 1)
        if out < 1:
            continue
        found = bands(size, kernel, dilation, pad_lo, pad_hi)
        assert found[0][0] == 0 and found[-1][1] == out
        assert all(prev[1] == nxt[0] for prev, nxt in zip(found, found[1:]))
        for o0, o1, a, b in found:
            for o in range(o0, o1):
                live = [t for t in range(kernel) if 0 <= o - pad_lo + t * dilation < size]
                assert (a, b) == ((live[0], live[-1]) if live else (kernel // 2, kernel // 2 - 1))


def test_partially_live_rate_12_on_17x17_splits_into_nine_band_convs():
    module = torch.nn.Conv2d(8, 8, 3, padding=12, dilation=12).eval()
    convs = _convs(module, (1, 8, 17, 17), passes=(DropDeadTaps(), PartitionBorders()))
    assert len(convs) == 9
    assert all([int(p) for p in c.attrs.padding] == [0, 0, 0, 0] for c in convs)
    macs = sum(int(np.prod([int(d) for d in c.args[1].ty.shape.values])) * int(np.prod(
        [int(d) for d in c.ty.shape.values][2:])) for c in convs)
    assert macs == 8 * 8 * 27 * 27  # (5*2 + 7*1 + 5*2)^2 live tap-outputs per channel pair, out of 9 * 17^2


def test_small_saving_keeps_the_conv_whole():
    module = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2).eval()
    assert len(_convs(module, (1, 8, 17, 17), passes=(DropDeadTaps(), PartitionBorders()))) == 1


def test_convs_padded_to_whole_tiles_on_cpu_only_and_cropped_back():
    from atrous.pipeline.passes import PadToTiles
    from atrous.pipeline.passes.tile_padding import round_up

    assert [round_up(w, 6) for w in (17, 33, 65, 129, 18, 5)] == [18, 36, 66, 132, 18, 5]
    from atrous.pipeline.schedules.packed_conv import register_budget, register_tile, vector_lanes

    dense = torch.nn.Conv2d(8, 16, 3, padding=2, dilation=2, stride=1).eval()
    with tvm.target.Target("llvm") as cpu:
        (conv,) = _convs(dense, (1, 8, 17, 17), passes=(PadToTiles(),))
        pixels, _ = register_tile(None, 16, vector_lanes(cpu), register_budget(cpu, 3))
    wide = int(conv.ty.shape.values[-1])
    assert wide % pixels == 0 and 17 < wide < 17 + pixels  # the next whole number of tiles
    assert [int(p) for p in conv.attrs.padding] == [2, 2, 2, 2 + wide - 17]  # made of right padding
    with tvm.target.Target("cuda"):
        (conv,) = _convs(dense, (1, 8, 17, 17), passes=(PadToTiles(),))
    assert [int(p) for p in conv.attrs.padding] == [2, 2, 2, 2]  # GPU schedules tile differently: untouched
    depthwise = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16).eval()
    with tvm.target.Target("llvm"):
        (conv,) = _convs(depthwise, (1, 16, 17, 17), passes=(PadToTiles(),))
    assert [int(p) for p in conv.attrs.padding] == [1, 1, 1, 1]  # depthwise rows are vectorised, not tiled
    odd = torch.nn.Conv2d(256, 2058 // 49, 1).eval()  # 42 filters: not a whole number of vectors
    with tvm.target.Target("llvm") as cpu:
        (conv,) = _convs(odd, (1, 256, 33, 33), passes=(PadToTiles(),))
        lanes = vector_lanes(cpu)
    filters = int(conv.args[1].ty.shape.values[0])
    assert filters % lanes == 0 and 42 < filters < 42 + lanes
    assert not conv.args[1].value.numpy()[42:].any()  # the added filters are zeros
    pointwise = torch.nn.Conv2d(8, 42, 1).eval()  # a short reduction: PixelConv's, over the whole image's pixels
    with tvm.target.Target("llvm"):
        (conv,) = _convs(pointwise, (1, 8, 17, 17), passes=(PadToTiles(),))
    assert [int(d) for d in conv.ty.shape.values] == [1, 42, 17, 17]


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_matrices_compute_minimal_filtering(m):
    from atrous.pipeline.passes.winograd import matrices

    bt, g, at = matrices(m)
    rng = np.random.default_rng(m)
    for _ in range(5):
        x, w = rng.standard_normal(m + 2), rng.standard_normal(3)
        direct = [sum(x[i + k] * w[k] for k in range(3)) for i in range(m)]
        np.testing.assert_allclose(at @ ((g @ w) * (bt @ x)), direct, rtol=1e-12, atol=1e-12)


def _winograd_convs(module, shape, target="llvm", m=2):
    from atrous.pipeline.passes import Winograd

    with tvm.target.Target(target):
        convs = _convs(module, shape, passes=(Winograd(m, min_channels=1),))
    return [(int(c.attrs.groups), [int(k) for k in c.args[1].ty.shape.values[2:]]) for c in convs]


def test_winograd_rewrites_3x3_stride1_convs_on_cpu_only():
    from atrous.pipeline.passes import Winograd

    wide = torch.nn.Conv2d(128, 128, 3, padding=1).eval()
    with tvm.target.Target("llvm"):
        assert len(_convs(wide, (1, 128, 9, 9), passes=(Winograd(),))) == 4  # 2 transforms, products, output
        assert len(_convs(wide, (1, 128, 9, 9), passes=(Winograd(min_channels=129),))) == 1  # below threshold
    dilated = torch.nn.Conv2d(8, 16, 3, padding=2, dilation=2).eval()
    # input transform (depthwise: B^T along rows, then columns), the products (one group per transform
    # position, 1x1), the output transform (1x1 over the positions)
    assert _winograd_convs(dilated, (1, 8, 17, 17)) == [(8, [4, 1]), (32, [1, 4]), (16, [1, 1]), (1, [1, 1])]
    assert _winograd_convs(dilated, (1, 8, 17, 17), m=4) == [(8, [6, 1]), (48, [1, 6]), (36, [1, 1]), (1, [1, 1])]
    assert _winograd_convs(dilated, (1, 8, 17, 17), target="cuda") == [(1, [3, 3])]
    for declined, shape in [(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), (1, 8, 17, 17)),
                            (torch.nn.Conv2d(8, 16, 1), (1, 8, 17, 17)),
                            (torch.nn.Conv2d(8, 16, 3, padding=1, groups=2), (1, 8, 17, 17)),
                            (torch.nn.Conv2d(8, 16, 3, padding=12, dilation=12), (1, 8, 17, 17))]:  # rate > map/2
        assert _winograd_convs(declined.eval(), shape) == [(int(declined.groups), list(declined.kernel_size))]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("conv, shape", [
    (dict(padding=2, dilation=2), (1, 8, 17, 17)),  # ASPP-like, odd map
    (dict(padding=0, dilation=(1, 3)), (1, 8, 13, 22)),  # valid, asymmetric rates
    (dict(padding=(3, 1), dilation=(3, 1)), (2, 8, 14, 9)),  # batch 2, one axis dense
])
def test_winograd_matches_pytorch(m, conv, shape):
    """The rewritten graph alone (no schedules), built and run, against PyTorch's direct convolution."""
    from tvm import relax

    from atrous.pipeline.ingest import to_relax
    from atrous.pipeline.passes import Winograd

    torch.manual_seed(0)
    module = torch.nn.Conv2d(shape[1], 12, 3, **conv).eval()
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    path = export_onnx(module, {"x": x}, ["y"], _tmp() / "m.onnx").path
    with tvm.target.Target("llvm"):
        mod = Winograd(m, min_channels=1)(to_relax(onnx.load(str(path)), {"x": shape}))
    assert f"groups={(m + 2) ** 2}" in mod.script()  # the products conv: the rewrite applied
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = module(torch.from_numpy(x)).detach().numpy()
    assert got.shape == want.shape
    rel_l2 = np.linalg.norm(got - want) / np.linalg.norm(want)
    # F(4x4) rounds more than F(2x2): its transforms have entries up to 8 and 1/24 (module docstring)
    assert rel_l2 < {2: 1e-6, 4: 5e-6}[m] and np.abs(got - want).max() < 1e-4, (rel_l2, np.abs(got - want).max())


@pytest.mark.parametrize("conv, shape", [
    (dict(kernel_size=3, stride=2, padding=1, output_padding=1), (1, 8, 8, 8)),  # LinkNet's decoder
    (dict(kernel_size=2, stride=2), (2, 8, 7, 9)),  # LinkNet's last layer: 1x1 per phase; batch 2
    (dict(kernel_size=4, stride=2, padding=1), (1, 8, 5, 5)),  # FCN-style upsampling
    (dict(kernel_size=3, stride=3, output_padding=2), (1, 8, 4, 6)),  # more phases than taps per axis
    (dict(kernel_size=3, stride=(2, 1), padding=(1, 0), output_padding=(1, 0)), (1, 8, 5, 6)),  # one axis strided
    (dict(kernel_size=3, padding=1), (1, 8, 6, 7)),  # stride 1: a conv with the flipped kernel
])
def test_transposed_conv_phases_match_pytorch(conv, shape):
    """A strided transposed conv as one dense conv over its output phases, built unscheduled and run, against
    PyTorch; the transposed conv is gone from the graph."""
    from tvm import relax

    from atrous.pipeline.ingest import to_relax
    from atrous.pipeline.passes import TransposedConvPhases

    torch.manual_seed(0)
    module = torch.nn.ConvTranspose2d(shape[1], 6, **conv).eval()
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    path = export_onnx(module, {"x": x}, ["y"], _tmp() / "m.onnx").path
    mod = TransposedConvPhases()(to_relax(onnx.load(str(path)), {"x": shape}))
    assert "conv2d_transpose" not in mod.script()
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = module(torch.from_numpy(x)).detach().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_transposed_conv_phases_take_a_3x3_stride2_kernel_as_2x2_taps():
    from atrous.pipeline.passes import TransposedConvPhases

    up = torch.nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1).eval()
    (conv,) = _convs(up, (1, 8, 9, 9), passes=(TransposedConvPhases(),))
    assert [int(d) for d in conv.args[1].ty.shape.values] == [16, 8, 2, 2]  # 4 phases x 4 filters, 4 taps
    for declined in (torch.nn.ConvTranspose2d(8, 8, 3, stride=2, padding=2, dilation=2),
                     torch.nn.ConvTranspose2d(8, 8, 3, stride=2, groups=2)):
        assert _convs(declined.eval(), (1, 8, 9, 9), passes=(TransposedConvPhases(),)) == []


class _Gate(torch.nn.Module):
    def forward(self, x):
        return torch.tanh(x) * torch.sigmoid(x)


def _gate_module(shape):
    from atrous.pipeline.ingest import to_relax

    path = export_onnx(_Gate().eval(), {"x": np.zeros(shape, "float32")}, ["y"], _tmp() / "gate.onnx").path
    return to_relax(onnx.load(str(path)), {"x": shape})


def test_tanh_and_sigmoid_lower_without_libm_on_cpu_only_and_stay_accurate():
    from atrous.pipeline.optimize import OptimizeOptions, lower

    shape = (1, 4, 1000)
    mod = _gate_module(shape)

    def calls(target, fast):
        lowered = lower(mod, tvm.target.Target(target), OptimizeOptions(fast_math=fast))
        text = "\n".join(f.script() for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
        return {name for name in ("T.tanh(", "T.exp(", "T.sigmoid(") if name in text}

    assert calls({"kind": "llvm"}, fast=True) == set()  # polynomials only: they vectorise
    assert calls({"kind": "llvm"}, fast=False) == {"T.tanh(", "T.sigmoid("}
    assert calls({"kind": "cuda", "arch": "sm_87"}, fast=True) == {"T.tanh(", "T.sigmoid("}  # hardware has them

    x = np.linspace(-100, 100, int(np.prod(shape)), dtype="float32").reshape(shape)
    x[0, 0, :200] = np.linspace(-2, 2, 200)  # dense near zero, where relative error shows
    target = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(lower(mod, target, OptimizeOptions()), target=target)
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    x64 = x.astype(np.float64)
    want = np.tanh(x64) / (1 + np.exp(-x64))
    assert np.abs(got - want).max() < 1e-6


@pytest.mark.parametrize("in_size, out_size", [(17, 257), (65, 257), (17, 65), (9, 20), (257, 17), (5, 5)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_linear_taps_reproduce_pytorch_bilinear(in_size, out_size, align_corners):
    from atrous.pipeline.passes.separable_resize import linear_taps

    x = np.random.default_rng(in_size * out_size).standard_normal((1, 1, in_size, in_size)).astype("float32")
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=(out_size, out_size), mode="bilinear",
                                           align_corners=align_corners).numpy()[0, 0]
    taps, weights = linear_taps(in_size, out_size, "align_corners" if align_corners else "half_pixel")
    assert taps.min() >= 0 and taps.max() < in_size
    plane = x[0, 0].astype(np.float64)
    rows = plane[:, taps[:, 0]] * weights[:, 0] + plane[:, taps[:, 1]] * weights[:, 1]
    got = rows[taps[:, 0]] * weights[:, 0, None] + rows[taps[:, 1]] * weights[:, 1, None]
    assert np.abs(got - want).max() < 1e-6  # float32 rounding of PyTorch's own result


def test_bilinear_resize_runs_as_two_vectorised_passes_on_cpu_with_the_same_values():
    from atrous.pipeline.optimize import OptimizeOptions, lower

    class Up(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, size=(129, 129), mode="bilinear", align_corners=False)

    shape = (1, 4, 33, 33)
    path = export_onnx(Up().eval(), {"x": np.zeros(shape, "float32")}, ["y"], _tmp() / "up.onnx").path
    from atrous.pipeline.ingest import to_relax

    mod = to_relax(onnx.load(str(path)), {"x": shape})
    x = np.random.default_rng(3).standard_normal(shape).astype("float32")

    def run(target, separable):
        lowered = lower(mod, tvm.target.Target(target), OptimizeOptions(separable_resize=separable))
        names = [gv.name_hint for gv, _ in lowered.functions_items()]
        if target["kind"] != "llvm":
            return names, None
        vm = tvm.relax.VirtualMachine(tvm.compile(lowered, target=tvm.target.Target(target)), tvm.cpu())
        return names, vm["main"](tvm.runtime.tensor(x)).numpy()

    names, got = run({"kind": "llvm"}, True)
    assert not any("resize" in n for n in names) and any("take" in n for n in names), names
    stock_names, stock = run({"kind": "llvm"}, False)
    assert any("resize" in n for n in stock_names)
    assert np.abs(got - stock).max() <= 1e-6 * np.abs(stock).max()  # the same two lerps per output
    want = Up()(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-5
    gpu_names, _ = run({"kind": "cuda", "arch": "sm_87"}, True)
    assert any("resize" in n for n in gpu_names)  # GPU targets keep TVM's resize
    small = to_relax(onnx.load(str(export_onnx(Up().eval(), {"x": np.zeros((1, 1, 9, 9), "float32")}, ["y"],
                                                _tmp() / "small.onnx").path)), {"x": (1, 1, 9, 9)})
    lowered = lower(small, tvm.target.Target({"kind": "llvm"}), OptimizeOptions())
    assert any("resize" in gv.name_hint for gv, _ in lowered.functions_items())  # below MIN_OUTPUTS: one kernel


class _SkipSum(torch.nn.Module):
    """WaveNet's pattern: 1x1 convs of several inputs summed, plus a plain term; one conv's output reused."""

    def __init__(self, convs=4):
        super().__init__()
        self.pre = torch.nn.ModuleList(torch.nn.Conv2d(4, 6, 3, padding=1) for _ in range(convs))
        self.skip = torch.nn.ModuleList(torch.nn.Conv2d(6, 8, 1) for _ in range(convs))
        self.shared = torch.nn.Conv2d(6, 8, 1)

    def forward(self, x):
        zs = [torch.tanh(p(x)) for p in self.pre]
        total = x.mean(dim=1, keepdim=True).expand(-1, 8, -1, -1)  # a term that is not a conv
        for z, s in zip(zs, self.skip):
            total = total + s(z)
        reused = self.shared(zs[0])
        return total + reused, reused  # ``reused`` has two users: it stays a conv of its own


@pytest.mark.parametrize("convs, merged", [(4, True), (2, False)])
def test_summed_pointwise_convs_become_one_conv_over_the_concatenation(convs, merged):
    from tvm import relax

    from atrous.pipeline.ingest import to_relax
    from atrous.pipeline.optimize import OptimizeOptions, lower
    from atrous.pipeline.passes import MergeSummedConvs

    torch.manual_seed(convs)
    model, shape = _SkipSum(convs).eval(), (1, 4, 9, 11)
    path = export_onnx(model, {"x": np.zeros(shape, "float32")}, ["y", "r"], _tmp() / "skips.onnx").path
    mod = relax.transform.FoldConstant()(to_relax(onnx.load(str(path)), {"x": shape}))

    def ops(m):
        return [getattr(getattr(b.value, "op", None), "name", "") for b in m["main"].body.blocks[0].bindings]

    before, after = ops(mod), ops(MergeSummedConvs()(mod))
    # convs + 1 shared: the summed ones fold into one (with 4), and the reused one is kept either way
    assert after.count("relax.nn.conv2d") == before.count("relax.nn.conv2d") - (convs - 1 if merged else 0)
    assert after.count("relax.concat") == int(merged)
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    target = tvm.target.Target({"kind": "llvm"})
    vm = tvm.relax.VirtualMachine(tvm.compile(lower(to_relax(onnx.load(str(path)), {"x": shape}), target,
                                                    OptimizeOptions()), target=target), tvm.cpu())
    got = [t.numpy() for t in vm["main"](tvm.runtime.tensor(x))]
    with torch.no_grad():
        want = [t.numpy() for t in model(torch.from_numpy(x))]
    for g, w in zip(got, want):
        assert np.abs(g - w).max() < 1e-5 * max(1, np.abs(w).max())
