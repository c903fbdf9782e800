"""Default CPU schedules: every kernel of an untuned model gets one (parallel, vectorised), and turning them off
leaves the unscheduled loop nests. Their numerics are covered by the dilation suite and the zoo tests, which
compile with them on."""

import pytest
import tvm

from pipeline import source, tune
from pipeline.optimize import OptimizeOptions, apply_schedules


@pytest.fixture(scope="module")
def lowered(host):
    return tune.lowered_module(source.from_zoo("deeplabv3-mobilenet", "tiny"), host, OptimizeOptions())


def _kernels(mod):
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_every_kernel_gets_a_parallel_vectorised_default_schedule(lowered, host):
    scheduled = _kernels(apply_schedules(lowered, host.tvm_target(), OptimizeOptions()))
    assert len(scheduled) > 20
    for name, func in scheduled.items():
        assert func.attrs.get("tirx.is_scheduled"), name
        text = func.script()
        assert "T.parallel" in text, name
        if name.startswith("fused_conv2d"):
            assert "T.vectorized" in text and "scope=\"local\"" in text, name


def test_without_defaults_kernels_stay_unscheduled(lowered, host):
    plain = _kernels(apply_schedules(lowered, host.tvm_target(), OptimizeOptions(default_schedules=False)))
    assert not any(f.attrs.get("tirx.is_scheduled") for f in plain.values())
    assert not any("T.parallel" in f.script() for f in plain.values())


def test_dense_convs_get_weights_packed_for_channel_vectors(lowered, host):
    """PackedConv re-lays dense conv weights out as O/F I kh kw F at compile time (F = two vectors of lanes)."""
    from pipeline.schedules.packed_conv import vector_lanes

    target = host.tvm_target()
    scheduled = apply_schedules(lowered, target, OptimizeOptions())
    kernels = _kernels(scheduled)
    packed = [name for name in kernels if name.endswith("_prepacked")]
    assert packed, "no conv was packed"
    assert not any(name.endswith("_weight_prepack") for name in kernels), "packing must fold into constants"
    lanes_f = 2 * vector_lanes(target)
    for name in packed:
        text = kernels[name].script()
        assert f"T.vectorized(T.int64({lanes_f}))" in text, name
        weight_shapes = [s for s in text.split("def main(")[1].split("):")[0].split("T.Buffer(")[1:]
                         if s.count("T.int64") == 5]
        assert any(f"T.int64({lanes_f}))" in s for s in weight_shapes), name
