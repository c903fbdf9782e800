"""Default CPU schedules: every kernel of an untuned model gets one (parallel, vectorised), and turning them off
leaves the unscheduled loop nests. Their numerics are covered by the dilation suite and the zoo tests, which
compile with them on. Built for a named AVX2 CPU (znver3), not this machine's: register tiles follow the ISA.
These are the rules of the plain (NCHW) layout, what a build with ``blocked_layout=False`` uses."""

import pytest
import tvm

from atrous.pipeline import source
from atrous.pipeline.tuning import tune
from atrous.pipeline.optimize import OptimizeOptions, apply_schedules
from tir_checks import update_loops


@pytest.fixture(scope="module")
def host(avx2):
    """Every test here builds for znver3 (conftest ``avx2``); those that run kernels need a machine that runs it."""
    return avx2


@pytest.fixture(scope="module")
def lowered(host):
    """The NCHW kernels these rules are for (the blocked layout's rules: test_blocked.py)."""
    return tune.lowered_module(source.from_zoo("deeplabv3-mobilenet", "tiny"), host,
                               OptimizeOptions(blocked_layout=False))


def _runs_here(preset):
    if not preset.runs_here:
        pytest.skip(f"this machine cannot run code built for {preset.target_dict()['mcpu']}")


def _kernels(mod):
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_every_kernel_gets_a_parallel_vectorised_default_schedule(lowered, host):
    scheduled = _kernels(apply_schedules(lowered, host.tvm_target(), OptimizeOptions()))
    assert len(scheduled) > 20
    for name, func in scheduled.items():
        assert func.attrs.get("tirx.is_scheduled"), name
        text = func.script()
        assert "T.parallel" in text, name
        if name.startswith("fused_conv2d"):  # an accumulator in registers (or, PixelConv over a blocked
            # reduction, an output block in cache); vector loops, or (PlaneConv) taps
            assert ("scope=\"local\"" in text or "intermediate_global" in text), name
            assert "T.vectorized" in text or "T.unroll" in text, name


def test_without_defaults_kernels_stay_unscheduled(lowered, host):
    plain = _kernels(apply_schedules(lowered, host.tvm_target(), OptimizeOptions(default_schedules=False)))
    assert not any(f.attrs.get("tirx.is_scheduled") for f in plain.values())
    assert not any("T.parallel" in f.script() for f in plain.values())


def test_dense_convs_get_weights_packed_for_channel_vectors(lowered, host):
    """PackedConv re-lays dense conv weights out as O/F I kh kw F at compile time, F whole vectors of channels."""
    import re

    from atrous.pipeline.schedules.packed_conv import vector_lanes
    from atrous.pipeline.schedules.pixel_conv import PixelConv

    target = host.tvm_target()
    kernels = _kernels(apply_schedules(lowered, target, OptimizeOptions()))
    pixel = {name for name, f in _kernels(lowered).items() if PixelConv().apply(f, target, False) is not None}
    packed = [name for name in kernels if name.endswith("_prepacked") and name[:-len("_prepacked")] not in pixel]
    assert len(packed) >= 10, "dense convs were not packed"
    assert not any(name.endswith("_weight_prepack") for name in kernels), "packing must fold into constants"
    lanes = vector_lanes(target)
    for name in packed:
        text = kernels[name].script()
        # int32 indices since lowering narrows CPU kernels (schedules/narrow.py); T.int64(n) otherwise
        weight = re.search(r"\w+_global: T.Buffer\(\((?:(?:T.int64\()?\d+\)?, ){4}(?:T.int64\()?(\d+)\)?\)", text)
        assert weight, name
        f_block = int(weight.group(1))
        assert f_block % lanes == 0, name
        assert re.search(rf"T.vectorized\((T.int64\()?{f_block}\)", text), name
        # rows widened to whole tiles (passes/tile_padding.py) may crop in the write-back, never in the FMA loop
        update = re.search(r'T.sblock\("conv\w*_update"\)(.*?)(T.sblock\(|$)', text, re.S)
        assert update and "T.where" not in update.group(1), f"{name}: a bounds check inside the register tile"


def test_register_tile_divides_rows_fills_vectors_and_fits_the_register_file():
    from atrous.pipeline.schedules.packed_conv import register_tile

    for width, channels, lanes, registers in [(33, 256, 8, 16), (17, 256, 8, 16), (65, 24, 8, 16),
                                              (129, 96, 8, 16), (24, 64, 8, 16), (33, 256, 16, 32)]:
        pixels, block = register_tile(width, channels, lanes, registers)
        vectors = block // lanes
        assert width % pixels == 0 and channels % block == 0 and block % lanes == 0
        assert pixels * vectors + vectors + 2 <= registers, (width, channels)
    assert register_tile(24, 64, 8) == (6, 16)  # 12 accumulators + 2 weight vectors + a broadcast
    assert register_tile(17, 256, 8) == (1, 32)  # prime width: one pixel, four channel vectors
    assert register_tile(33, 21, 8) is None  # 21 classes fill no vector: ConvLike handles it


def test_depthwise_convs_run_plane_by_plane_with_the_same_results(lowered, host):
    """PlaneConv: one parallel task per channel plane, its padding computed inside it, taps unrolled; the same
    reduction order as ConvLike, so bit-identical outputs."""
    _runs_here(host)
    import numpy as np

    from atrous.pipeline.schedules.cpu import ConvLike
    from atrous.pipeline.schedules.plane_conv import PlaneConv

    target = host.tvm_target()
    depthwise = {name: f for name, f in _kernels(lowered).items() if name.startswith("fused_conv2d")
                 and len(f.params[1].shape) == 4 and int(f.params[1].shape[1]) == 1}
    assert len(depthwise) >= 3
    rng = np.random.default_rng(0)
    for name, func in list(depthwise.items())[:3]:
        plane = PlaneConv().apply(func, target, False)
        assert plane is not None, name
        text = plane.mod["main"].script()
        parallel = text.index("T.parallel")
        pad = text.find('T.sblock("pad_temp")')
        assert "T.unroll" in text and pad > parallel, name  # the padding is computed inside the plane's task
        args = [rng.standard_normal([int(d) for d in p.shape]).astype("float32") for p in func.params]
        assert np.array_equal(*_outputs([plane, ConvLike().apply(func, target, False)], target, args)), name


def test_pointwise_convs_vectorise_pixels_and_check_bounds_in_the_last_tile_only(lowered, host):
    """PixelConv: 1x1 convs over the image as one pixel axis, pixels in vectors, weights packed; the last tile
    of an odd pixel count is split off its loop at build time, so the other tiles carry no bounds check; the
    same reduction order as PackedConv (a blocked long reduction too), so bit-identical outputs."""
    _runs_here(host)
    import re

    import numpy as np

    from atrous.pipeline.schedules.packed_conv import PackedConv, vector_lanes
    from atrous.pipeline.schedules.pixel_conv import PixelConv

    target = host.tvm_target()
    lanes = 2 * vector_lanes(target)
    pointwise = {name: f for name, f in _kernels(lowered).items() if PixelConv().apply(f, target, False)}
    assert len(pointwise) >= 8  # MobileNet's expansions and projections
    rng = np.random.default_rng(0)
    blocked = [name for name, f in pointwise.items()  # a long reduction, blocked: the output block accumulates
               if "intermediate_global" in PixelConv().apply(f, target, False).mod["main"].script()]
    assert blocked
    for name, func in [*list(pointwise.items())[:3], (blocked[0], pointwise[blocked[0]])]:
        pixel = PixelConv().apply(func, target, False)
        text = pixel.mod["main"].script()
        assert re.search(rf"T.vectorized\((T.int64\()?{lanes}\)", text), name  # pixels in vectors
        assert ('scope="local"' in text or name in blocked) and "T.parallel" in text, name
        args = [rng.standard_normal([int(d) for d in a.shape]).astype("float32")
                for a in _arg_shapes(func)]
        assert np.array_equal(*_outputs([pixel, PackedConv().apply(func, target, False)], target, args)), name
        pixels = int(np.prod(args[0].shape[2:]))
        if pixels % lanes:
            assert "pragma_loop_partition_hint" in text, name
            unchecked, checked = update_loops(pixel.mod, target)  # the main part unchecked, the tail checked
            assert unchecked >= 1 and checked >= 1, f"{name}: the last tile was not split off ({unchecked}, {checked})"


def _outputs(schedules, target, args) -> list:
    """The output (last argument) of each scheduled kernel, built for ``target`` and run on copies of ``args``."""
    outputs = []
    for sch in schedules:
        tensors = [tvm.runtime.tensor(a) for a in args]
        kernel = tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")})
        tvm.compile(kernel, target=target).mod["main"](*tensors)
        outputs.append(tensors[-1].numpy())
    return outputs


def _arg_shapes(func):
    from tvm.s_tir import meta_schedule as ms

    return ms.arg_info.ArgInfo.from_prim_func(func)
