"""Choosing direct or Winograd per conv: the measured table (pipeline/tuning/algorithms.py), the cost model for convs it
lacks, and the Winograd pass following both."""

import json

import numpy as np
import pytest
import torch
import tvm_ffi

from atrous import targets
from atrous.pipeline import source
from atrous.pipeline.tuning.algorithm_table import (TABLE, Table, choice, cost_model, multiply_saving, summary,
                                                    summary_text)
from atrous.pipeline.tuning.algorithms import candidate_convs, lowered_alternatives
from atrous.pipeline.errors import AtrousError
from atrous.pipeline.optimize import OptimizeOptions
from atrous.pipeline.passes.winograd import DECISIONS, Conv, products_tile
from atrous.pipeline.tuning.tune import TuneArgs, lowered_module, relax_module, tune_model


def conv(c: int, size: int, rate: int = 1) -> Conv:
    return Conv(1, c, size, size, c, (rate, rate), (rate,) * 4, size, size)


def test_choice_takes_winograd_only_when_clearly_faster():
    assert choice({"direct": 1.0, "winograd2": 0.9, "winograd4": 0.5}) == "winograd4"
    assert choice({"direct": 1.0, "winograd4": 0.97}) == "direct"  # within the margin: exact arithmetic wins
    assert choice({"direct": 1.0, "winograd2": None, "winograd4": 2.0}) == "direct"  # a failed alternative
    assert choice({"direct": None, "winograd4": 2.0}) == "winograd4"


def test_cost_model_counts_tile_waste(host):
    target = host.tvm_target()
    # 33x33 outputs: 9x9 F(4x4) tiles, widened to 9x10 (90 products pixels: whole 6-pixel register tiles on
    # AVX2; 81 would not be) of 36 multiplications each, against 9 per output
    if products_tile(target, 512) == 6:
        assert multiply_saving(conv(512, 33), 4, target) == pytest.approx(9 * 33 * 33 / (36 * 9 * 10))
    assert cost_model(conv(512, 33), target) == 4
    assert cost_model(conv(512, 33, rate=2), target) == 4
    assert cost_model(conv(64, 65), target) is None  # narrow: the transforms cost more than they save
    assert cost_model(conv(128, 33), target) is None  # medium width: only on large maps
    assert cost_model(conv(128, 129), target) == 4
    # rate 4 on 17x17: each phase is ~4x4 outputs, one F(4x4) tile of 6x6 inputs per phase row... most is waste
    assert multiply_saving(conv(512, 17, rate=4), 4, target) < 1
    assert cost_model(conv(512, 17, rate=4), target) is None
    assert cost_model(conv(512, 7, rate=2), target) is None  # F(4x4) does not fit: 7 < 4 x 2


class TwoConvs(torch.nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a = torch.nn.Conv2d(c, c, 3, padding=1)
        self.b = torch.nn.Conv2d(c, c, 3, padding=1)  # the same shape: one entry
        self.down = torch.nn.Conv2d(c, c, 3, padding=1, stride=2)  # stride 2: Winograd does not apply

    def forward(self, x):
        return self.down(torch.relu(self.b(torch.relu(self.a(x)))))


def two_convs(c: int = 64, size: int = 8):
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, c, size, size)).astype(np.float32)
    return source.from_torch(f"two-convs-{c}", lambda: TwoConvs(c).eval(), {"x": x})


def test_candidates_are_the_distinct_convs_winograd_could_take(host):
    found = candidate_convs(relax_module(two_convs()), host.tvm_target(), OptimizeOptions())
    assert [c.key() for c in found] == ["1x64x8x8->64 d1x1 p1,1,1,1"]
    assert candidate_convs(relax_module(two_convs(c=32)), host.tvm_target(), OptimizeOptions()) == []  # narrow


AUTO = OptimizeOptions(winograd="auto")


def test_a_dilated_convs_direct_alternative_is_measured_as_the_model_lowers_it(host):
    """In the blocked layout a dilated conv is cut into border bands when it is lowered: its direct alternative
    must be too (measured whole, it lost to Winograd F(2x2) on DeepLabV3-MobileNet's rate-6 ASPP conv, which in
    the model ran 1.8x slower than the banded direct conv)."""
    from atrous.pipeline.passes.winograd import Conv

    conv = Conv(1, 64, 17, 17, 64, (6, 6), (6, 6, 6, 6), 17, 17)
    lowered = lowered_alternatives(conv, host.tvm_target(), OptimizeOptions())
    direct = [name for name, _ in lowered["direct"].functions_items()]
    assert any("bands" in str(name) for name in direct), direct
    assert set(lowered) >= {"direct", "winograd2"}


def test_the_pass_follows_the_table_then_the_cost_model(host, tmp_path):
    src, target = two_convs(), host.tvm_target()
    key = "1x64x8x8->64 d1x1 p1,1,1,1"

    def lowered(entry):
        if entry:
            Table({key: {"direct": 1.0, **entry}}).save(tmp_path)
        return lowered_module(src, host, OptimizeOptions(database=tmp_path if entry else None, blocked_layout=False))

    plain = lowered(None)  # no table: 64 channels is below the cost model's threshold
    assert summary(plain, None) == {"direct": 2, "measured": 0}  # the stride-2 conv is not a candidate
    assert summary_text(summary(plain, None)) == ("winograd: none of 2 3x3 convs it applies to "
                                                  "(0 chosen by measurement, 2 by the cost model)")
    # the decisions are a module attribute; the graph is the one built without the pass
    assert tvm_ffi.structural_equal(plain.without_attr(DECISIONS),
                                    lowered_module(src, host, OptimizeOptions(winograd="off", blocked_layout=False)))
    for m in (2, 4):
        rewritten = lowered({f"winograd{m}": 0.5, "choice": f"winograd{m}"})
        forced = lowered_module(src, host, OptimizeOptions(winograd=str(m), winograd_min_channels=1,
                                                           blocked_layout=False))
        assert tvm_ffi.structural_equal(rewritten, forced), m  # both convs, as measured
        assert summary(rewritten, tmp_path) == {f"F({m}x{m})": 2, "measured": 2}
    assert tvm_ffi.structural_equal(lowered({"winograd4": 2.0, "choice": "direct"}), plain)
    assert summary(plain, tmp_path) == {"direct": 2, "measured": 2}
    # the cost model where the table has no entry: 256 channels on 17x17 is rewritten untuned
    assert cost_model(conv(256, 17), target) == 4


def test_the_blocked_layout_follows_the_table_then_its_own_cost_model(host, tmp_path):
    """In the blocked layout the chosen convs become blocked Winograd kernels; untuned, the blocked cost model
    takes 64 -> 64 (narrower ones stay direct); a measured "direct" is kept."""
    import tvm

    from atrous.pipeline.tuning.algorithm_table import blocked_cost_model

    def kernels(entry):
        if entry:
            Table({"1x64x8x8->64 d1x1 p1,1,1,1": {"direct": 1.0, **entry}}).save(tmp_path)
        mod = lowered_module(two_convs(), host, OptimizeOptions(database=tmp_path if entry else None))
        return mod, [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]

    mod, names = kernels(None)
    assert summary(mod, None) == {"F(4x4)": 2, "measured": 0}
    assert any("winograd_product" in n for n in names)  # both convs call one kernel (the same shapes)
    mod, names = kernels({"winograd4": 2.0, "choice": "direct"})
    assert summary(mod, tmp_path) == {"direct": 2, "measured": 2} and not any("winograd" in n for n in names)
    target = host.tvm_target()
    assert blocked_cost_model(conv(64, 33), target) == 4 and blocked_cost_model(conv(32, 33), target) is None
    assert blocked_cost_model(conv(256, 5), target) is None  # a 5x5 map: 8x8 of F(4x4) tiles, no saving


@pytest.mark.slow
def test_algorithms_are_measured_once_and_kept_with_the_database(host, tmp_path):
    """Real measurements (each kernel built and timed here), written to algorithms.json, reused by a re-run."""
    report = tune_model(TuneArgs(two_convs(), host, 0, database=tmp_path, algorithms_only=True, options=AUTO),
                        progress=False)
    entry = report.algorithms["1x64x8x8->64 d1x1 p1,1,1,1"]
    assert set(entry) == {"direct", "winograd2", "winograd4", "choice"}
    assert all(0 < entry[n] < 0.1 for n in ("direct", "winograd2", "winograd4")), entry
    assert entry["choice"] == choice({k: v for k, v in entry.items() if k != "choice"})
    assert json.loads((tmp_path / TABLE).read_text())["convs"] == report.algorithms
    assert "direct vs Winograd" in report.table() and entry["choice"] in report.table()
    again = tune_model(TuneArgs(two_convs(), host, 0, database=tmp_path, algorithms_only=True, options=AUTO),
                       progress=False)
    assert again.algorithms == report.algorithms  # nothing re-measured: the same numbers
    with pytest.raises(AtrousError, match="only CPU targets"):
        tune_model(TuneArgs(two_convs(), targets.get_target("h100"), 0, database=tmp_path / "gpu",
                            algorithms_only=True), progress=False)
