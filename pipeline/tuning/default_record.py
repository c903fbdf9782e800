"""The default schedule of a tuning task, measured like a candidate and stored as a tuning record.

``compile`` applies a task's best database record, or the rules of schedules/ when there is none. A record
replaces the default even when it is slower: with a few trials per kernel (a banded dilated conv is nine kernels)
MetaSchedule's candidates are often worse than the hand-written default, and tuning made models slower. So tuning
measures the default first, with the same builder and runner as the candidates, and commits it as a record
carrying its schedule trace: the best record is then never worse than the default, as far as the
measurements can tell.

The default is identified by a digest of its trace, kept in the database's ``trials.json``: when the rules change,
the new default is measured again. MetaSchedule's own search must not see these records (``SearchView``): it
replays the best records of a task through its post-processors to seed the evolutionary search, and its
RewriteLayout post-processor aborts the whole run (a failed check, not a schedule error) on a weight that the
default schedule has already packed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass

from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

FAILED = 1e10  # MetaSchedule's run time for a candidate that failed to build or run


def default_schedule(task, target, options=None) -> s_tir.Schedule | None:
    """The schedule the default rules give the task's kernel (None: no rule applies; compile leaves it as is)."""
    from atrous.pipeline.schedules import default_rules
    from atrous.pipeline.schedules.guard import apply_first

    with target:  # a rule that raises declines, as in compile (schedules/guard.py)
        return apply_first(task.dispatched[0]["main"], target, default_rules(target, options), task.task_name)


def trace_digest(schedule: s_tir.Schedule) -> str:
    """A short digest of a schedule's trace (its instructions and decisions, printed)."""
    return hashlib.sha256(str(schedule.trace).encode()).hexdigest()[:16]


@dataclass
class Measured:
    digest: str
    seconds: float | None  # None: the build or the run failed (error says why)
    error: str = ""


def time_schedules(schedules: list, target, builder, runner) -> list[tuple[list[float] | None, str]]:
    """Build ``schedules`` in one batch (the builder's workers in parallel), then time them one by one:
    (run seconds, "") each, or (None, why it failed)."""
    built = builder.build([ms.builder.BuilderInput(s.mod, target) for s in schedules])
    device = "cpu" if target.kind.name == "llvm" else target.kind.name
    inputs = [ms.runner.RunnerInput(b.artifact_path, device,
                                    ms.arg_info.ArgInfo.from_entry_func(s.mod, remove_preproc=True))
              for s, b in zip(schedules, built) if not b.error_msg]
    try:
        futures = iter(runner.run(inputs)) if inputs else iter(())
        results = []
        for b in built:
            if b.error_msg:
                results.append((None, last_line(b.error_msg)))
                continue
            result = next(futures).result()
            if result.error_msg or not result.run_secs:
                results.append((None, last_line(result.error_msg or "no timings")))
            else:
                results.append(([float(s) for s in result.run_secs], ""))
        return results
    finally:
        for b in built:
            if b.artifact_path:
                shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)


def measure_default(task, schedule: s_tir.Schedule, target, database, builder, runner) -> Measured:
    """Build and time ``schedule``, the task's default, and commit it to ``database`` as a record (a failed
    measurement as a failed record: never applied, dropped by compaction, counted as a trial)."""
    (run_secs, error), = time_schedules([schedule], target, builder, runner)
    args_info = ms.arg_info.ArgInfo.from_entry_func(schedule.mod, remove_preproc=True)
    workload = database.commit_workload(task.dispatched[0])
    # a failure is committed too, as MetaSchedule does: it counts as a trial
    database.commit_tuning_record(ms.database.TuningRecord(schedule.trace, workload, run_secs or [FAILED], target,
                                                           args_info))
    seconds = sum(run_secs) / len(run_secs) if run_secs else None
    return Measured(trace_digest(schedule), seconds, error)


def last_line(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[-1] if lines else message


def from_search(record) -> bool:
    """Whether MetaSchedule's search made the record: its candidates' traces all pass through post-processing."""
    return any(inst.kind.name == "EnterPostproc" for inst in record.trace.insts)


@derived_object
class SearchView(ms.database.PyDatabase):
    """A database as the search should see it: every record except the default schedules'."""

    def __init__(self, database):
        super().__init__()
        self.database = database

    def has_workload(self, mod) -> bool:
        return self.database.has_workload(mod)

    def commit_workload(self, mod):
        return self.database.commit_workload(mod)

    def commit_tuning_record(self, record) -> None:
        self.database.commit_tuning_record(record)

    def get_top_k(self, workload, top_k: int) -> list:
        return [r for r in self.database.get_top_k(workload, 1 << 20) if from_search(r)][:top_k]

    def get_all_tuning_records(self) -> list:
        return [r for r in self.database.get_all_tuning_records() if from_search(r)]

    def __len__(self) -> int:
        return len(self.get_all_tuning_records())
