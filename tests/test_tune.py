"""Tuning: a few-trial run into a fresh database, resuming it, applying it in compile, and refusing a database
made for another target. One small model (one dilated conv task plus a pooled head) keeps this around a minute:
most of it is MetaSchedule's one-time import of its tensor intrinsics and per-task worker start-up."""

import json
import os

import numpy as np
import pytest
import torch

from atrous.pipeline import source
from atrous.pipeline.errors import AtrousError
from atrous.pipeline.interface import CompileArgs, compile_model, require_ok, verify_model
from atrous.pipeline.optimize import OptimizeOptions
from atrous.pipeline.tuning.database import MANIFEST
from atrous.pipeline.tuning.tune import TuneArgs, tune_model

pytestmark = pytest.mark.slow


class DilatedBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.expand = torch.nn.Conv2d(8, 24, 1)  # a pointwise conv (24 channels: a padded block on AVX-512)

    def forward(self, x):
        return self.expand(torch.relu(self.conv(x)))


def block_source():
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 8, 12, 12)).astype(np.float32)
    return source.from_torch("dilated-block", lambda: DilatedBlock().eval(), {"x": x})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, host):
    """A database with 2 trials per task, then the report of a resumed run asking for 3."""
    database = tmp_path_factory.mktemp("db")
    first = tune_model(TuneArgs(block_source(), host, 2, database=database), progress=False)
    again = tune_model(TuneArgs(block_source(), host, 2, database=database), progress=False)
    more = tune_model(TuneArgs(block_source(), host, 3, database=database), progress=False)
    return database, first, again, more


def test_a_few_trials_are_recorded_with_timings(tuned):
    database, first, _, _ = tuned
    assert first.tasks and first.new_trials == 2 * len(first.tasks)
    for task in first.tasks:
        assert task.trials == 2, task
        assert task.best_s is not None and 0 < task.best_s < 1, task
    conv = max(first.tasks, key=lambda t: t.flops)
    assert conv.flops >= 2 * 8 * 8 * 9 * 12 * 12  # the dilated conv task, FLOPs counted
    assert "fused_conv2d" in first.table()
    assert (database / MANIFEST).is_file() and (database / "database_tuning_record.json").is_file()


def test_resume_tunes_only_what_is_missing(tuned):
    _, first, again, more = tuned
    assert again.new_trials == 0
    assert [t.trials for t in again.tasks] == [2] * len(first.tasks)
    assert more.new_trials == len(first.tasks)
    assert [t.trials for t in more.tasks] == [3] * len(first.tasks)


def test_zero_trials_reports_the_database_and_tunes_nothing(tuned, host):
    database = tuned[0]
    before = (database / "database_tuning_record.json").read_text()
    report = tune_model(TuneArgs(block_source(), host, 0, database=database), progress=False)
    assert report.new_trials == 0 and all(t.trials == 3 for t in report.tasks)
    assert (database / "database_tuning_record.json").read_text() == before


def test_compile_applies_the_database_and_stays_exact(tuned, host, tmp_path):
    database = tuned[0]
    artifact = compile_model(CompileArgs(block_source(), host, tmp_path, options=OptimizeOptions(database)))
    meta = artifact.meta()
    assert meta.database == str(database)
    assert meta.tuned_tasks == meta.total_tasks == len(tuned[1].tasks)
    require_ok(verify_model(artifact, host))
    untuned = compile_model(CompileArgs(block_source(), host, tmp_path / "u", tuned=False))
    assert untuned.meta().database is None and untuned.meta().tuned_tasks == 0


def test_a_database_for_another_target_is_refused(tuned, host, tmp_path):
    database = tmp_path / "other"
    database.mkdir()
    for f in tuned[0].iterdir():
        (database / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((database / MANIFEST).read_text())
    manifest["target"]["mcpu"] = "cortex-a72"
    (database / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AtrousError, match="was made for"):
        compile_model(CompileArgs(block_source(), host, tmp_path, options=OptimizeOptions(database)))
    with pytest.raises(AtrousError, match="was made for"):
        tune_model(TuneArgs(block_source(), host, 1, database=database), progress=False)


def test_a_missing_database_named_explicitly_is_an_error(host, tmp_path):
    with pytest.raises(AtrousError, match="no tuning database"):
        compile_model(CompileArgs(block_source(), host, tmp_path, options=OptimizeOptions(tmp_path / "none")))


def test_compaction_keeps_the_fastest_records_and_the_trial_counts(tuned, host, tmp_path):
    from atrous.pipeline.tuning import tune

    database = tmp_path / "compact"
    database.mkdir()
    for f in tuned[0].iterdir():
        (database / f.name).write_bytes(f.read_bytes())
    before = tune_model(TuneArgs(block_source(), host, 0, database=database), progress=False)
    tune.compact(database, keep=1)
    lines = (database / "database_tuning_record.json").read_text().splitlines()
    assert len(lines) == len(before.tasks)  # one record per kernel left
    after = tune_model(TuneArgs(block_source(), host, 3, database=database), progress=False)
    assert after.new_trials == 0  # the compacted-away trials still count
    assert [t.trials for t in after.tasks] == [3] * len(before.tasks)
    assert [t.best_s for t in after.tasks] == [t.best_s for t in before.tasks]


def test_each_task_starts_from_its_measured_default_schedule(tuned):
    database, first, _, more = tuned
    counts = json.loads((database / "trials.json").read_text())
    assert len(counts) == len(first.tasks)
    for task in more.tasks:
        assert task.default_s is not None and 0 < task.best_s <= task.default_s, task
        assert task.gain >= 1.0
    assert all(len(c["default"]["digest"]) == 16 for c in counts.values())
    assert "default ms" in more.table() and "tasks with a measured default" in more.table()


def test_a_changed_default_schedule_is_measured_again(tuned, host, tmp_path):
    database = tmp_path / "changed"
    database.mkdir()
    for f in tuned[0].iterdir():
        (database / f.name).write_bytes(f.read_bytes())
    counts = json.loads((database / "trials.json").read_text())
    key = next(iter(counts))
    counts[key]["default"]["digest"] = "rules-of-before"
    (database / "trials.json").write_text(json.dumps(counts))
    report = tune_model(TuneArgs(block_source(), host, 3, database=database), progress=False)
    assert report.new_trials == 1  # that task's default, nothing else: every task already had its 3 trials
    assert json.loads((database / "trials.json").read_text())[key]["default"]["digest"] != "rules-of-before"


def test_a_database_of_defaults_only_compiles_to_the_untuned_schedules(host, tmp_path):
    """One trial per task is the default schedule alone: applying that database gives exactly the untuned module
    (the default schedules' traces replay on the tasks as compile lowers them, int32-narrowed kernels too)."""
    import tvm
    import tvm_ffi

    from atrous.pipeline.optimize import apply_schedules
    from atrous.pipeline.schedules.blocked_conv import BlockedConv
    from atrous.pipeline.tuning.tune import lowered_module

    database = tmp_path / "defaults"
    report = tune_model(TuneArgs(block_source(), host, 1, database=database), progress=False)
    assert all(t.trials == 1 and t.best_s == t.default_s for t in report.tasks), report.tasks
    lowered = lowered_module(block_source(), host, OptimizeOptions())
    target = host.tvm_target()
    untuned = apply_schedules(lowered, target, OptimizeOptions())
    # no default rules behind the database: every schedule in ``tuned`` comes from a record
    tuned = apply_schedules(lowered, target, OptimizeOptions(database, default_schedules=False))

    assert tvm_ffi.structural_equal(tuned, untuned)
    assert any(BlockedConv().apply(f, target, False) for f in lowered.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc))


def test_failed_candidates_are_recorded_and_reported_and_tuning_goes_on(host, tmp_path):
    """A runner whose every measurement fails (a crashed or unreachable board): nothing is applied, each task
    still gets its trials counted, and the report says how many failed and why."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Failed(ms.runner.PyRunnerFuture):
        def done(self):
            return True

        def result(self):
            return ms.runner.RunnerResult(None, "the board went away")

    @derived_object
    class Broken(ms.runner.PyRunner):
        def run(self, runner_inputs):
            return [Failed() for _ in runner_inputs]

    database = tmp_path / "failed"
    report = tune_model(TuneArgs(block_source(), host, 2, database=database, runner=Broken(),
                                 strategy="replay-trace"), progress=False)
    assert report.new_trials == 2 * len(report.tasks)
    for task in report.tasks:
        assert task.best_s is None and task.default_s is None and task.trials == 2, task
        assert task.failed and all("the board went away" in why for why in task.failed), task
    assert "candidates of this run failed" in report.table() and "the board went away" in report.table()
    assert not (database / "database_tuning_record.json").read_text().strip()  # failures are not kept


def test_a_database_is_parsed_once_until_its_files_change(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from atrous.pipeline.tuning.database import read_database

    ms.database.JSONDatabase(work_dir=str(tmp_path))  # creates the two empty files
    first = read_database(tmp_path)
    assert read_database(tmp_path / ".." / tmp_path.name) is first  # same directory, unchanged: not parsed again
    records = tmp_path / "database_tuning_record.json"
    os.utime(records, ns=(records.stat().st_atime_ns, records.stat().st_mtime_ns + 1))  # as a tuning run's write
    assert read_database(tmp_path) is not first


def test_a_database_file_with_a_broken_line_is_an_error_not_a_crash(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from atrous.pipeline.tuning.database import read_database

    ms.database.JSONDatabase(work_dir=str(tmp_path))
    (tmp_path / "database_tuning_record.json").write_text("\n")  # TVM's parser segfaults on this
    with pytest.raises(AtrousError, match="line 1 of database_tuning_record.json is not a JSON record"):
        read_database(tmp_path)


def test_kernels_without_a_reduction_are_sampled_not_evolved(host):
    """A copy kernel's few parallel/vectorise choices are sampled (replay-trace); a conv is searched."""
    import tvm
    from tvm import te

    from atrous.pipeline.tuning.tasks import extract_tasks
    from atrous.pipeline.tuning.tune import lowered_module, search_strategy

    conv = max(extract_tasks(lowered_module(block_source(), host, OptimizeOptions()), host),
               key=lambda t: "conv" in t.task_name)
    assert "conv" in conv.task_name
    assert search_strategy(conv.dispatched[0], "evolutionary") == "evolutionary"
    a = te.placeholder((4, 8, 16), name="a")
    copy = tvm.IRModule({"main": te.create_prim_func([a, te.compute((16, 8, 4), lambda i, j, k: a[k, j, i])])})
    assert search_strategy(copy, "evolutionary") == "replay-trace"
    assert search_strategy(conv.dispatched[0], "replay-trace") == "replay-trace"  # asked for: kept


def test_a_task_whose_search_cannot_start_is_reported_and_the_rest_are_tuned(host, tmp_path, monkeypatch):
    """MetaSchedule raising while it generates one kernel's design space (a TVM check that fails) skips that
    kernel with a line in the report; the others get their trials."""
    from atrous.pipeline.tuning import tune

    real, broken = tune._tune_one, []

    def design_space_fails_on_the_first_task(task, *args):
        if not broken or broken == [task.task_name]:
            broken[:] = [task.task_name]
            raise RuntimeError("InternalError: Check failed: design space of a kernel no rule expected")
        return real(task, *args)

    monkeypatch.setattr(tune, "_tune_one", design_space_fails_on_the_first_task)
    report = tune_model(TuneArgs(block_source(), host, 2, database=tmp_path / "db", strategy="replay-trace"),
                        progress=False)
    skipped = next(t for t in report.tasks if t.name == broken[0])
    assert [w for w in skipped.failed if w.startswith("search: RuntimeError")], skipped.failed
    assert skipped.trials == 1  # its default schedule was still measured and recorded
    others = [t for t in report.tasks if t is not skipped]
    assert others and all(t.trials == 2 and not t.failed for t in others)
