"""Models no one here wrote: a schedule rule never fails a compile, and the shapes that broke one get the fast
schedule."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import targets
from pipeline import source
from pipeline.interface import CompileArgs, compile_model, require_ok, verify_model


class SqueezeExcite(nn.Module):
    """MobileNetV3's gate: global pool -> 1x1 conv -> ReLU -> 1x1 conv -> hardsigmoid -> times the block's input."""

    def __init__(self, channels):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))


class GatedBlock(nn.Module):
    """Expansion, dilated depthwise conv with hardswish, squeeze-excitation, projection, residual."""

    def __init__(self, channels=16, expanded=48, dilation=2):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(channels, expanded, 1, bias=False), nn.BatchNorm2d(expanded),
                                    nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(expanded, expanded, 3, padding=dilation, dilation=dilation,
                                                 groups=expanded, bias=False), nn.BatchNorm2d(expanded), nn.Hardswish())
        self.gate = SqueezeExcite(expanded)
        self.project = nn.Sequential(nn.Conv2d(expanded, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.project(self.gate(self.depthwise(self.expand(x))))


def _gated_source():
    torch.manual_seed(0)
    module = GatedBlock().eval()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics that do something
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    inputs = {"x": np.random.default_rng(0).standard_normal((1, 16, 17, 17)).astype("float32")}
    return source.from_torch("gated-block", lambda: module, inputs)


def test_squeeze_excitation_gates_compile_with_the_fast_schedules_and_match_pytorch(host, build_root):
    """The gate's multiply is fused into the kernel that computes the gate (a 1x1 map) and broadcast over the
    block's input; the conv rules used to raise an InternalError inlining it (issue: foreign models)."""
    artifact = compile_model(CompileArgs(_gated_source(), host, build_root, tuned=False, force=True))
    assert artifact.meta().rule_failures == ()
    result = require_ok(verify_model(artifact, host))
    assert result.checks and all(c.ok for c in result.checks)


def test_a_rule_that_raises_declines_and_the_report_names_the_kernel(host, build_root, monkeypatch):
    """Any exception from a rule (here a bare RuntimeError before the real rules) is one line in the report; the
    next rule schedules the kernel and the model still matches PyTorch."""
    from pipeline import optimize, schedules
    from tvm.s_tir.dlight.base import ScheduleRule

    class Broken(ScheduleRule):
        def apply(self, func, target, tunable):
            if any(b.name_hint.startswith("conv") for b in _blocks(func)):
                raise RuntimeError("first line\nCheck failed: broken on purpose")
            return None

    rules = schedules.default_rules
    monkeypatch.setattr(schedules, "default_rules", lambda target, options=None: (Broken(), *rules(target, options)))
    assert optimize  # the pass list imports default_rules from the package at call time
    artifact = compile_model(CompileArgs(_gated_source(), host, build_root / "broken", tuned=False, force=True))
    failures = artifact.meta().rule_failures
    assert failures and all("Broken failed (RuntimeError: Check failed: broken on purpose); scheduled by" in f
                            for f in failures), failures
    require_ok(verify_model(artifact, host))


def _blocks(func):
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    return [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]


@pytest.mark.parametrize("rule_error", ["ScheduleError", "InternalError"])
def test_apply_first_skips_a_raising_rule(rule_error):
    from tvm import s_tir, te

    from pipeline.schedules.cpu import Elementwise
    from pipeline.schedules.guard import apply_first, collect_failures

    a = te.placeholder((4, 8), name="a")
    func = te.create_prim_func([a, te.compute((4, 8), lambda i, j: a[i, j] * 2, name="b")])

    class Raises:
        def apply(self, func, target, tunable):
            if rule_error == "ScheduleError":  # the way rules decline: not a failure
                s_tir.Schedule(func).get_sblock("missing")
            raise targets_error()

    def targets_error():
        import tvm

        return tvm.error.InternalError("Check failed: (node.defined()) is false")

    with collect_failures() as failures:
        sch = apply_first(func, targets.get_target("host").tvm_target(), [Raises(), Elementwise()], "k")
    assert sch is not None and "T.parallel" in sch.mod["main"].script()
    assert [f.line() for f in failures] == ([] if rule_error == "ScheduleError" else [
        "k: Raises failed (InternalError: Check failed: (node.defined()) is false); scheduled by Elementwise"])
