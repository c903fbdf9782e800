"""Stage: MetaSchedule tuning into the device's reviewed database.

On CPU targets, each wide 3x3 conv's algorithm (direct or Winograd) is chosen first, by measurement
(algorithms.py). Tasks come from exactly the module ``compile`` builds (same passes and choices), so every record
applies. Each task's first trial is its default schedule (the one ``compile`` uses without a record), measured and
stored as a record, so that a tuned kernel is never slower than the untuned one (default_record.py). Tasks are
tuned one at a time: records are appended to the JSON database as candidates are measured, an interrupt loses at
most the batch in flight, and a re-run resumes by giving each task only the trials it still lacks. A crashed or
hung candidate is recorded as failed by MetaSchedule and tuning goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tvm import tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from atrous.pipeline.tuning import measure
from atrous.pipeline.tuning.algorithm_table import table_text
from atrous.pipeline.tuning.database import RECORDS, WORKLOADS, best_seconds, open_database, read_database, records_for
from atrous.pipeline.tuning.default_record import SearchView, default_schedule, last_line, measure_default, trace_digest
from atrous.pipeline.errors import AtrousError
from atrous.pipeline.export import write_onnx
from atrous.pipeline.ingest import load_onnx, to_relax
from atrous.pipeline.tuning.tasks import extract_tasks, task_flops
from atrous.pipeline.optimize import OptimizeOptions, lower
from atrous.pipeline.schedules.cpu import has_reduction
from atrous.pipeline.schedules.guard import describe


def relax_module(source, exporter: str = "dynamo"):
    """The model as ``compile`` imports it (Relax, before any pass)."""
    with tempfile.TemporaryDirectory() as tmp:
        model = load_onnx(write_onnx(source, Path(tmp) / "model.onnx", exporter).path)
    return to_relax(model, {n: v.shape for n, v in source.inputs.items()}, source.name)


def lowered_module(source, preset, options: OptimizeOptions):
    """The fused TensorIR module that ``compile`` would schedule (the database is not applied)."""
    return lower(relax_module(source), preset.tvm_target(), options)


TRIALS = "trials.json"
KEEP = 8  # records kept per kernel after a run: the fastest, so the committed database stays reviewable


def workload_key(task) -> str:
    """MetaSchedule's structural hash of the task's kernel, as the database files write it."""
    return str(ms.database.Workload(task.dispatched[0]).as_json()[0])


def trial_counts(directory: Path) -> dict:
    """{workload key: {"trials": measured so far, "kept": records left after the last compaction}}."""
    path = Path(directory) / TRIALS
    return json.loads(path.read_text()) if path.is_file() else {}


def trials_done(directory: Path, database, task) -> int:
    """Trials measured for ``task``, counting those compacted away."""
    records = len(records_for(database, task))
    count = trial_counts(directory).get(workload_key(task))
    return records if count is None else count["trials"] + max(0, records - count["kept"])


def compact(directory: Path, keep: int = KEEP, defaults: dict | None = None) -> None:
    """Keep the ``keep`` fastest successful records per kernel; remember how many trials each kernel had.

    Tuning appends every measured candidate (~3 KB each); only the best is ever applied. The trial counts go to
    ``trials.json`` so that a later run still tops each kernel up to its budget instead of starting over, with
    ``defaults`` ({workload key: {"digest", "s"}}: the default schedules measured by this run, see
    default_record.py)."""
    directory = Path(directory)
    keys = [json.loads(line)[0] for line in (directory / WORKLOADS).read_text().splitlines() if line.strip()]
    groups: dict[int, list] = {}
    for line in (directory / RECORDS).read_text().splitlines():
        if line.strip():
            index, record = json.loads(line)
            groups.setdefault(index, []).append((line, record))
    counts = trial_counts(directory)
    lines = []
    for index, items in sorted(groups.items()):
        key = keys[index]
        before = counts.get(key, {"trials": 0, "kept": 0})
        timed = [(sum(r[1]) / len(r[1]), line) for line, r in items if r[1] and max(r[1]) < 1e9]
        best = [line for _, line in sorted(timed)[:keep]]
        counts[key] = {**before, "trials": before["trials"] + len(items) - before["kept"], "kept": len(best)}
        lines += best
    for key, default in (defaults or {}).items():
        counts.setdefault(key, {"trials": 0, "kept": 0})["default"] = default
    _write_atomic(directory / RECORDS, "".join(line + "\n" for line in lines))
    _write_atomic(directory / TRIALS, json.dumps(counts, indent=1, sort_keys=True) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class TaskResult:
    name: str
    flops: float
    weight: int
    trials: int
    best_s: float | None
    default_s: float | None = None  # the default schedule, measured like the candidates
    failed: list[str] = field(default_factory=list)  # why candidates of this run failed to build or run

    @property
    def gflops(self) -> float | None:
        return self.flops / self.best_s / 1e9 if self.best_s else None

    @property
    def gain(self) -> float | None:
        """How much faster the best record is than the default schedule (1.0: the default is the best)."""
        return self.default_s / self.best_s if self.default_s and self.best_s else None


@dataclass
class TuneReport:
    database: Path
    tasks: list[TaskResult] = field(default_factory=list)
    new_trials: int = 0
    algorithms: dict = field(default_factory=dict)  # {conv key: measured alternatives and choice} (algorithms.py)

    def as_dict(self) -> dict:
        return {"database": str(self.database), "new_trials": self.new_trials, "algorithms": self.algorithms,
                "tasks": [{"name": t.name, "weight": t.weight, "flops": t.flops, "best_s": t.best_s,
                           "default_s": t.default_s, "gflops": t.gflops, "trials": t.trials,
                           "failed": t.failed} for t in self.tasks]}

    def table(self) -> str:
        def ms_(seconds):
            return f"{1e3 * seconds:9.3f}" if seconds else f"{'-':>9}"

        lines = []
        if self.algorithms:
            lines += ["direct vs Winograd, measured per conv (ms; algorithms.json):", table_text(self.algorithms)]
            if not self.tasks:
                return "\n".join(lines)
            lines.append("")
        lines += [f"{'task':<44} {'x':>2} {'MFLOP':>9} {'default ms':>10} {'best ms':>9} {'gain':>5} "
                 f"{'GFLOP/s':>8} {'trials':>6} {'failed':>6}"]
        for t in self.tasks:
            rate = f"{t.gflops:8.1f}" if t.gflops else f"{'-':>8}"
            gain = f"{t.gain:5.2f}" if t.gain else f"{'-':>5}"
            lines.append(f"{t.name[:44]:<44} {t.weight:>2} {t.flops / 1e6:9.1f} {ms_(t.default_s):>10} "
                         f"{ms_(t.best_s)} {gain} {rate} {t.trials:>6} {len(t.failed):>6}")
        total = sum(t.best_s * t.weight for t in self.tasks if t.best_s)
        lines.append(f"sum of best task latencies x weight: {1e3 * total:.2f} ms; database: {self.database}")
        default = [t for t in self.tasks if t.default_s and t.best_s]
        if default:
            before, after = (sum(getattr(t, a) * t.weight for t in default) for a in ("default_s", "best_s"))
            lines.append(f"tasks with a measured default ({len(default)}/{len(self.tasks)}): "
                         f"{1e3 * before:.2f} ms default -> {1e3 * after:.2f} ms best ({before / after:.2f}x)")
        failed = [(t.name, why) for t in self.tasks for why in t.failed]
        if failed:
            lines.append(f"{len(failed)} candidates of this run failed (recorded, not applied); the first: "
                         f"{failed[0][0]}: {failed[0][1]}")
        return "\n".join(lines)


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Advance a progress bar per measured candidate and show the best latency of the current task."""

    def __init__(self, bar, label: str, best: float | None):
        super().__init__()
        self.bar, self.label, self.best = bar, label, best
        self.failures: list[str] = []

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        for built, result in zip(builder_results, runner_results):
            if built.error_msg or result.error_msg:
                self.failures.append(last_line(built.error_msg or result.error_msg))
            if result.run_secs and not result.error_msg:
                seconds = sum(float(s) for s in result.run_secs) / len(result.run_secs)
                self.best = seconds if self.best is None else min(self.best, seconds)
        best = f"{1e3 * self.best:.3f} ms" if self.best else "-"
        self.bar.set_postfix_str(f"{self.label} best {best}", refresh=False)
        self.bar.update(len(runner_results))


@dataclass(frozen=True)
class TuneArgs:
    source: object
    target: object
    trials_per_task: int
    options: OptimizeOptions = OptimizeOptions()
    database: Path | None = None  # default: the preset's tuning_dir
    runner: object = None  # default: measure on this machine (measure.local_runner)
    builder: object = None  # default: measure.local_builder on every core
    seed: int = 0
    algorithms_only: bool = False  # measure the convs' algorithms (direct vs Winograd) and stop
    # MetaSchedule's search: "evolutionary" (cost-model guided; what tuning runs use) or "replay-trace" (random
    # samples of the design space: no search cost, for checking the tuning flow itself)
    strategy: str = "evolutionary"


def tune_model(args: TuneArgs, progress: bool = True) -> TuneReport:
    """Tune every task of the model up to ``trials_per_task`` records each (0: only report the database)."""
    from tqdm import tqdm

    preset = args.target
    target = preset.tvm_target()
    directory = Path(args.database or preset.tuning_dir)
    database = open_database(directory, preset)
    builder, runner = args.builder or measure.local_builder(), args.runner or measure.local_runner()
    measures_algorithms = args.options.winograd == "auto" and target.kind.name == "llvm"
    if args.algorithms_only and not measures_algorithms:
        raise AtrousError(f"--algorithms-only times direct vs Winograd convs, which only CPU targets have, with "
                          f"--winograd auto; '{preset.name}' is {target.kind.name}, --winograd {args.options.winograd}")
    mod = relax_module(args.source)
    algorithms = {}
    if (args.trials_per_task or args.algorithms_only) and measures_algorithms:
        from atrous.pipeline.tuning.algorithms import choose_algorithms

        # the algorithm of each conv first (measured here, kept in the database): its kernels are the tasks. Timed
        # with warm caches: a Winograd conv is a chain of kernels, each reading what the previous one just wrote
        # (flushing before each would charge it cold misses it never has in a model)
        algorithms = choose_algorithms(mod, preset, args.options, directory, database, builder,
                                       args.runner or measure.local_runner(cache_flush=False), progress)
    if args.algorithms_only:
        return TuneReport(directory, algorithms=algorithms)
    options = dataclasses.replace(args.options, database=directory)  # lowering reads the measured choices
    tasks = extract_tasks(lower(mod, target, options), preset)
    counts = trial_counts(directory)
    # (task, its default schedule when it has not been measured yet, trials left for the search after it)
    todo = []
    for task in tasks:
        budget = max(0, args.trials_per_task - trials_done(directory, database, task))
        default = (_stale_default(task, target, args.options, counts.get(workload_key(task), {}))
                   if args.trials_per_task else None)
        todo.append((task, default, max(0, budget - 1) if default else budget))
    report, measured, failed = TuneReport(directory, algorithms=algorithms), {}, {}
    total = sum(n + (d is not None) for _, d, n in todo)
    try:
        with tqdm(total=total, unit="trial", disable=not progress or total == 0, dynamic_ncols=True) as bar:
            for index, (task, default, budget) in enumerate(todo):
                label = f"task {index + 1}/{len(todo)} {task.task_name[:30]}"
                if default:
                    bar.set_postfix_str(f"{label} default schedule", refresh=False)
                    result = measure_default(task, default, target, database, builder, runner)
                    bar.update(1)
                    report.new_trials += 1
                    if result.seconds is None:
                        bar.write(f"atrous: the default schedule of {task.task_name} failed to measure: "
                                  f"{result.error}")
                        failed.setdefault(task.task_name, []).append(f"default schedule: {result.error}")
                    else:
                        measured[workload_key(task)] = {"digest": result.digest, "s": result.seconds}
                if budget:
                    report.new_trials += budget
                    callback = _Progress(bar, label, best_seconds(records_for(database, task)))
                    try:
                        _tune_one(task, budget, database, args, builder, runner, callback)
                    except Exception as err:  # noqa: BLE001 - one task's search must not stop the others
                        why = f"search: {describe(err)}"
                        bar.write(f"atrous: {task.task_name} skipped, MetaSchedule could not search it ({why})")
                        callback.failures.append(why)
                    finally:
                        failed.setdefault(task.task_name, []).extend(callback.failures)
    finally:  # also on an interrupt: what was measured is kept, compacted
        if report.new_trials:
            compact(directory, defaults=measured)
    database = read_database(directory)  # as compacted; a compile later in this process reuses the parse
    counts = trial_counts(directory)
    for task in tasks:
        default = counts.get(workload_key(task), {}).get("default", {})
        report.tasks.append(TaskResult(task.task_name, task_flops(task), int(task.weight),
                                       trials_done(directory, database, task),
                                       best_seconds(records_for(database, task)), default.get("s"),
                                       failed.get(task.task_name, [])))
    return report


def _stale_default(task, target, options, count: dict):
    """The task's default schedule if the database has no measurement of it (of these rules), else None."""
    schedule = default_schedule(task, target, options)
    if schedule is None or count.get("default", {}).get("digest") == trace_digest(schedule):
        return None
    return schedule


def cpu_tensor_intrinsics_only() -> None:
    """Make ``import tvm.s_tir.tensor_intrin`` register only the CPU intrinsics (x86, arm_cpu).

    Every MetaSchedule ``TuneContext`` imports that package, which parses hundreds of TVMScript intrinsics for
    CUDA, ROCm, Hexagon and RISC-V. The parser inspects the call stack for each one, which is slow in a process
    that has imported PyTorch: measured 60-150 s on 2 cores, against ~4 s for x86 + arm_cpu, which are the
    only ones a CPU design space can use (VNNI / AVX-512 / dot-product tensorization). The package is
    installed as a plain namespace, so importing any other submodule explicitly still works."""
    import importlib
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    package = types.ModuleType(name, "CPU tensor intrinsics only (see pipeline/tuning/tune.py)")
    package.__path__ = [str(Path(tvm.s_tir.__file__).parent / "tensor_intrin")]
    package.__package__ = name
    sys.modules[name] = package
    for sub in ("x86", "arm_cpu"):
        setattr(package, sub, importlib.import_module(f"{name}.{sub}"))


def search_strategy(mod, requested: str) -> str:
    """The search for one task: ``requested``, except that a kernel without a reduction (a copy, transpose,
    resize or elementwise kernel) is sampled ("replay-trace") instead of searched by evolution.

    Such a kernel's design space is a few parallel/vectorise/unroll choices, which random samples cover; the
    evolutionary search keeps mutating a space that small in search of unmeasured candidates, which was seen to
    run for 9 minutes at full CPU without proposing one (a Winograd transform copy of FCN-atrous), and it
    retrains its cost model on every batch."""
    if requested != "evolutionary":
        return requested
    functions = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    return "evolutionary" if any(has_reduction(f) for f in functions) else "replay-trace"


def design_space(task, target, options, requested: str):
    """(space, search strategy) for one task. A kernel that a tunable default rule takes (the blocked convs,
    depthwise convs and pools: schedules/blocked_*.py) is searched in that rule's own space: the rule, its
    choices (register tile, ...) sampled anew for each candidate ("replay-func"), so tuning starts from kernels
    that are already good instead of MetaSchedule's generic space, which rarely beat the defaults. Any other
    kernel gets MetaSchedule's generic space with ``search_strategy``."""
    from atrous.pipeline.schedules import default_rules
    from atrous.pipeline.schedules.guard import apply_first

    func = task.dispatched[0]["main"]
    with target:
        for rule in default_rules(target, options):
            if apply_first(func, target, [rule], task.task_name) is None:
                continue
            if getattr(rule, "TUNABLE", False):
                return ms.space_generator.ScheduleFn(_sampler(rule, target), sch_rules=[], postprocs=[],
                                                     mutator_probs={}), "replay-func"
            break
    return "post-order-apply", search_strategy(task.dispatched[0], requested)


def _sampler(rule, target):
    def sample(sch):
        with target:
            scheduled = rule.apply(sch.mod["main"], target, True, seed=sch.fork_seed())
        if scheduled is None:
            raise ValueError(f"{type(rule).__name__} no longer takes its kernel")
        return scheduled

    return sample


def _tune_one(task, budget: int, database, args: TuneArgs, builder, runner, callback) -> None:
    """Tune one task; MetaSchedule's logs go to a temporary directory that is kept (and named) on failure."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    logger.setLevel(logging.WARNING)  # the progress bar replaces its log
    # MetaSchedule rebuilds its logging with dictConfig, naming the logger's current handlers; an unnamed one
    # (seen on the second tuning run in one process) makes it crash on None.format.
    for handler in [h for h in logger.handlers if h.get_name() is None]:
        logger.removeHandler(handler)
    if args.target.tvm_target().kind.name == "llvm":
        cpu_tensor_intrinsics_only()
    logs = Path(tempfile.mkdtemp(prefix="atrous-tune-logs-"))
    try:
        space, strategy = design_space(task, args.target.tvm_target(), args.options, args.strategy)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [task], work_dir=str(logs), space=space, strategy=strategy, seed=args.seed)
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(logs), max_trials_global=budget,
                      max_trials_per_task=budget, num_trials_per_iter=min(64, budget), database=SearchView(database),
                      builder=builder, runner=runner,
                      measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                                             callback])
    except BaseException:  # the logs of a failed or interrupted search are kept and named
        print(f"atrous: MetaSchedule logs of {task.task_name} kept in {logs}", file=sys.stderr)
        raise
    shutil.rmtree(logs, ignore_errors=True)
