"""Dilated convolutions against PyTorch through the whole pipeline (export, import, optimize, build, run)."""

import functools

import numpy as np
import pytest

from atrous.pipeline import source
from atrous.pipeline.interface import CompileArgs, compile_model, verify_model
from atrous.pipeline.optimize import REWRITES, OptimizeOptions, rewrites_only
from atrous.pipeline.verify import report

from dilation_cases import CASES, build


# the cases are narrow (4-12 channels): Winograd's performance threshold would leave them all alone
EXTRA = {"winograd": {"winograd_min_channels": 1}}
# baseline: every rewrite off (NCHW, direct convs); then each rewrite alone; Winograd in the blocked layout; then what
# compile does by default
OPTION_SETS = ({"baseline": rewrites_only()} | {name: rewrites_only(name, **EXTRA.get(name, {})) for name in REWRITES}
               | {"winograd_blocked": rewrites_only("winograd", "blocked_layout", winograd_min_channels=1),
                  "defaults": OptimizeOptions()})


PAIRS = [(case, name) for name in OPTION_SETS for case in CASES]


def _inputs(case) -> dict:
    return {"x": np.random.default_rng(0).standard_normal(case.shape).astype("float32")}


@functools.lru_cache(maxsize=None)
def _graph(case_name: str, option_set: str, mcpu: str | None = None):
    """The case's fused TensorIR graph under ``option_set``, before scheduling, for the host (or ``mcpu``)."""
    from atrous import targets
    from atrous.pipeline.tuning.tune import lowered_module

    case = next(c for c in CASES if c.name == case_name)
    src = source.from_torch(f"dilation-{case.name}", lambda: build(case), _inputs(case))
    return lowered_module(src, targets.get_target("host", mcpu), OPTION_SETS[option_set])


@pytest.mark.parametrize("case, option_set", PAIRS, ids=[f"{c.name}-{n}" for c, n in PAIRS])
def test_dilated_case_matches_pytorch(case, option_set, host, build_root):
    options = OPTION_SETS[option_set]
    if option_set != "baseline":
        import tvm_ffi

        # a rewrite that declines this case leaves the very graph the baseline run compiles and verifies:
        # checked here exactly, instead of compiling it a second time (make test has a time budget)
        if tvm_ffi.structural_equal(_graph(case.name, option_set), _graph(case.name, "baseline")):
            pytest.skip(f"{option_set} leaves this case's graph unchanged (structurally equal to the baseline's)")
    inputs = _inputs(case)
    name = f"dilation-{case.name}-{option_set}"
    src = source.from_torch(name, lambda: build(case), inputs)
    artifact = compile_model(CompileArgs(src, host, build_root, options=options))
    result = verify_model(artifact, host)
    print(report(result.checks, result.tolerance, result.notes))
    assert result.ok, report(result.checks, result.tolerance, result.notes)


# A case each rewrite is built for: the skips above must never hide a rewrite that stopped applying anywhere.
# Built for a named AVX2 CPU: whether a conv needs tile padding depends on the vector width (with AVX-512's 16
# lanes, rate2_same's rows need none).
TARGETED = {"drop_dead_taps": "rate_larger_than_map", "partition_borders": "rate_partially_out",
            "pad_to_tiles": "rate2_same", "winograd": "rate2_same", "transposed_phases": "transposed_then_dilated",
            "blocked_layout": "rate2_same"}
TARGETED_CPU = "znver3"


@pytest.mark.parametrize("option_set", sorted(TARGETED))
def test_each_rewrite_changes_the_graph_of_a_case_it_targets(option_set):
    import tvm_ffi

    assert set(TARGETED) == set(REWRITES)
    case = TARGETED[option_set]
    assert not tvm_ffi.structural_equal(_graph(case, option_set, TARGETED_CPU), _graph(case, "baseline", TARGETED_CPU))
