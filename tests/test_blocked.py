"""The blocked channel layout (NCHW{c}c) on CPU targets: where the layout changes, which kernels the blocked rules
take and with which register tiles on each ISA, and the layout's edge cases against PyTorch."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from torch import nn

from atrous import targets
from atrous.pipeline import source
from atrous.pipeline.interface import CompileArgs, compile_model, require_ok, verify_model
from atrous.pipeline.optimize import OptimizeOptions, apply_schedules
from atrous.pipeline.schedules.blocked_conv import BlockedConv
from atrous.pipeline.schedules.blocked_window import BlockedWindow
from atrous.pipeline.schedules.isa import isa_of
from atrous.pipeline.tuning.tune import lowered_module
from tir_checks import update_loops

# (preset, mcpu): AVX2, AVX-512 and NEON builds, whatever this machine is
BUILDS = [("host", "znver3"), ("host", "znver4"), ("rpi4", None)]


def _preset(name, mcpu):
    return targets.get_target(name, mcpu)


def _kernels(mod) -> dict:
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.fixture(scope="module", params=BUILDS, ids=[m or p for p, m in BUILDS])
def mobilenet(request):
    preset = _preset(*request.param)
    return preset, lowered_module(source.from_zoo("deeplabv3-mobilenet", "tiny"), preset, OptimizeOptions())


def test_the_layout_changes_only_at_the_graph_edges(mobilenet):
    """MobileNet's convs, ReLU6 clips, depthwise convs, ASPP bands, concats and pooling branch all stay blocked:
    the layout changes on the way in (NEON's 4-lane blocks take the RGB image blocked, AVX's 8 and 16 read it
    plain in the stem conv) and on the logits' way out (before the final upsampling, on the small map)."""
    preset, mod = mobilenet
    names = list(_kernels(mod))
    assert sum("layout_transform" in n for n in names) == (2 if isa_of(preset.tvm_target()).lanes == 4 else 1), names
    convs = [n for n in names if "conv2d" in n]
    assert len(convs) > 20 and all("nchwc" in n or "conv2d_bands" in n for n in convs), convs
    assert any("conv2d_bands" in n for n in convs)  # the ASPP's partially-out rates, band by band


def test_blocked_convs_and_windows_get_register_tiles_that_fit_the_isa(mobilenet):
    preset, mod = mobilenet
    target = preset.tvm_target()
    isa = isa_of(target)
    taken = {"conv": 0, "window": 0}
    for name, func in _kernels(mod).items():
        for kind, rule in (("conv", BlockedConv()), ("window", BlockedWindow())):
            sch = rule.apply(func, target, False)
            if sch is None:
                continue
            taken[kind] += 1
            text = sch.mod["main"].script()
            assert f"T.vectorized({isa.lanes})" in text and "T.parallel" in text, name
            assert 'scope="local"' in text and "T.unroll" in text, name
            break
    assert taken["conv"] >= 15 and taken["window"] >= 3, taken


def test_the_build_peels_the_last_tile_off_every_blocked_conv_row(mobilenet):
    """A row the tile does not divide keeps a bounds check in its last tile only (LoopPartition on int32
    indices): every such kernel keeps unchecked copies of its accumulator loops (with the check in every tile,
    the accumulators would leave the registers)."""
    preset, mod = mobilenet
    target = preset.tvm_target()
    peeled = 0
    for name, func in _kernels(apply_schedules(mod, target, OptimizeOptions())).items():
        text = func.script()
        if "nchwc" not in name or "pragma_loop_partition_hint" not in text:
            continue
        unchecked, checked = update_loops(tvm.IRModule({"main": func}), target)
        assert unchecked >= 1, f"{name}: the last tile was not split off ({unchecked} unchecked, {checked} checked)"
        peeled += 1
    assert peeled >= 3


class PaddedChannels(nn.Module):
    """24 and 40 channels (a padded last block with 16 lanes), a stem over 3, ReLU6 as ONNX Clip, a depthwise
    dilated conv over padded channels, a strided max pool with ceil_mode and an average pool."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, stride=2, padding=1)
        self.dilated = nn.Conv2d(24, 40, 3, padding=2, dilation=2)
        self.depthwise = nn.Conv2d(40, 40, 3, padding=3, dilation=3, groups=40)
        self.head = nn.Conv2d(40, 10, 1)

    def forward(self, x):
        y = F.relu6(self.stem(x))
        y = F.relu6(self.dilated(y))
        y = F.max_pool2d(self.depthwise(y), 3, 2, 1, ceil_mode=True)
        return self.head(F.avg_pool2d(y, 3, 1, 1))


class UnsafeOnPadding(nn.Module):
    """Ops that would make padded lanes infinite (exp, division by a tensor) next to safe ones, a concat of
    channel counts that do not fill blocks, a resize, a crop and a squeeze-excitation gate."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 12, 3, padding=1), nn.Conv2d(8, 20, 1)
        self.fuse = nn.Conv2d(32, 24, 3, padding=1)
        self.gate = nn.Conv2d(24, 24, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        y = self.fuse(torch.cat([torch.exp(a * 0.1), b / (1.5 + torch.sigmoid(b))], dim=1))
        y = y * torch.sigmoid(self.gate(y.mean(dim=(2, 3), keepdim=True)))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return y[:, :, 1:-2, 2:]


class GatedConv1d(nn.Module):
    """WaveNet's gated dilated causal 1-D conv with 24 channels, residual and skip 1x1 convs."""

    def __init__(self, channels=24, dilation=4):
        super().__init__()
        self.pad = dilation * 2
        self.filt = nn.Conv1d(channels, channels, 3, dilation=dilation)
        self.gate = nn.Conv1d(channels, channels, 3, dilation=dilation)
        self.res, self.skip = nn.Conv1d(channels, channels, 1), nn.Conv1d(channels, 16, 1)

    def forward(self, x):
        y = F.pad(x, (self.pad, 0))
        z = torch.tanh(self.filt(y)) * torch.sigmoid(self.gate(y))
        return x + self.res(z), self.skip(z)


class ShortConv1d(nn.Module):
    """16 channels over 1024 steps: one or two channel tiles, so each conv's row of tiles is cut into runs that
    run in parallel (a run's last tile must not write into the next run), the depthwise one as well."""

    def __init__(self, channels=16):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=2, dilation=2)
        self.depthwise = nn.Conv1d(channels, channels, 3, padding=4, dilation=4, groups=channels)
        self.res = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        return x + self.res(torch.relu(self.depthwise(torch.relu(self.conv(x)))))


CASES = {"padded_channels": (PaddedChannels, (1, 3, 37, 41)), "unsafe_on_padding": (UnsafeOnPadding, (2, 8, 13, 17)),
         "gated_conv1d": (GatedConv1d, (1, 24, 101)), "short_conv1d": (ShortConv1d, (1, 16, 1024))}


@pytest.mark.parametrize("mcpu", ["znver3", "znver4", "cortex-a76"])
def test_a_conv1d_of_few_channel_tiles_runs_on_every_core(mcpu):
    """A conv1d of one channel tile, dense or depthwise, has no rows to share out: its tiles are cut into runs,
    and its parallel loop has a task for every core (it once had one task for all of them)."""
    from tvm import te

    from atrous.pipeline.bench.hot_loops import _scheduled, target_for
    from atrous.pipeline.passes.blocked_kernels import dense, depthwise

    cores = 4
    target = tvm.target.Target({**target_for(mcpu).export(), "num-cores": cores})
    block = isa_of(target).block
    data = te.placeholder((1, 1, 1024, block), name="data")
    dense_weight = te.placeholder((1, 1, 1, block, block), name="weight")
    conv = dense(data, dense_weight, [1], [1], [0], [0], False, "conv1d_nchwc")
    text = _scheduled([data, dense_weight, conv], BlockedConv(), target).mod.script()
    window_weight = te.placeholder((1, 1, 3, 1, block), name="weight")
    conv = depthwise(data, window_weight, [1], [2], [2], [2], "depthwise_conv1d_nchwc")
    text += _scheduled([data, window_weight, conv], BlockedWindow(), target).mod.script()
    extents = [int(e) for e in re.findall(r"T\.parallel\((\d+)\)", text)]
    assert len(extents) == 2 and min(extents) >= cores, f"{mcpu}: parallel loops {extents}"


@pytest.mark.parametrize("mcpu", [None, "znver3"], ids=["native", "avx2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_blocked_layout_edge_cases_match_pytorch(case, mcpu, build_root):
    preset = targets.get_target("host", mcpu)
    if not preset.runs_here:
        pytest.skip(f"this machine cannot run code built for {mcpu}")
    factory, shape = CASES[case]
    torch.manual_seed(0)
    module = factory().eval()
    inputs = {"x": np.random.default_rng(0).standard_normal(shape).astype("float32")}
    outputs = ("y", "skip") if case == "gated_conv1d" else ("y",)
    src = source.from_torch(f"blocked-{case}", lambda: module, inputs, outputs)
    artifact = compile_model(CompileArgs(src, preset, build_root, tuned=False))
    assert artifact.meta().options["blocked_layout"] and not artifact.meta().rule_failures
    require_ok(verify_model(artifact, preset))


class AtrousPyramid(nn.Module):
    """ASPP's rates on a 17x17 map: rate 6 and 12 are split into border bands, rate 18 is cropped to its centre."""

    def __init__(self, channels=32):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=r, dilation=r) for r in (6, 12, 18))

    def forward(self, x):
        return sum(torch.relu(branch(x)) for branch in self.branches)


def _constant_bytes(mod) -> int:
    from tvm import relax

    sizes = []

    def visit(expr):
        if isinstance(expr, tvm.ir.expr.GenericConst):
            sizes.append(expr.value.numpy().nbytes)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sum(sizes)


@pytest.mark.parametrize("name", ["pyramid", "deeplabv3-mobilenet", "deeplabv3-resnet"])
def test_weights_are_stored_once(name, avx2, build_root):
    """The compiled constants are at most 1.15x the model's fp32 weights: packed once at compile time, padded only
    to whole channel blocks, and a dilated conv split into border bands keeps one copy of its weight (in NCHW each
    band has a cropped copy of its own: the pyramid's constants are 2.8x its weights there, DeepLabV3-MobileNet's
    were 1.87x). Winograd, a trade of memory for speed ((m+2)^2/9 = 4x the 3x3 kernels for F(4x4)), is off."""
    from atrous.models.flops import count_params

    if name == "pyramid":
        torch.manual_seed(0)
        module = AtrousPyramid().eval()
        inputs = {"x": np.random.default_rng(0).standard_normal((1, 32, 17, 17)).astype("float32")}
        src = source.from_torch("pyramid", lambda: module, inputs)
    else:
        src = source.from_zoo(name, "tiny")
    weights = 4 * count_params(src.module())
    for preset in (targets.get_target("host", "znver4"), avx2):
        options = OptimizeOptions(winograd="off")
        lowered = lowered_module(src, preset, options)
        assert _constant_bytes(apply_schedules(lowered, preset.tvm_target(), options)) <= 1.15 * weights
        if name == "pyramid":
            assert sum("conv2d_bands" in gv.name_hint for gv, _ in lowered.functions_items()) == 2
            plain = OptimizeOptions(winograd="off", blocked_layout=False)
            assert _constant_bytes(lowered_module(src, preset, plain)) > 2.5 * weights  # what bands cost in NCHW
    if name == "pyramid":
        require_ok(verify_model(compile_model(CompileArgs(src, avx2, build_root, tuned=False)), avx2))
