"""Applying the default schedule rules so that no rule can fail a compile.

A rule is code written for the kernels its author saw; a model from elsewhere brings kernels it was not written
for, and a schedule primitive can then raise anything from a ScheduleError to an InternalError deep in TVM.
``ApplyRules`` (dlight's ApplyDefaultSchedule, plus this) tries each rule on each kernel in order and treats any
exception as the rule declining: the next rule, and at last the generic ones, schedule the kernel. Each such
failure is recorded as a ``RuleFailure``; ``collect_failures()`` gathers them for the compile report, one line
per kernel.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

_COLLECTORS: list[list] = []


@dataclass(frozen=True)
class RuleFailure:
    kernel: str
    rule: str
    error: str  # exception type and the first line of its message
    scheduled_by: str | None = None  # the rule that took the kernel after all (None: left unscheduled)

    def line(self) -> str:
        fallback = f"scheduled by {self.scheduled_by}" if self.scheduled_by else "left unscheduled"
        return f"{self.kernel}: {self.rule} failed ({self.error}); {fallback}"


@contextlib.contextmanager
def collect_failures():
    """Collect the RuleFailures of every ApplyRules run inside the block into the list it yields."""
    failures: list[RuleFailure] = []
    _COLLECTORS.append(failures)
    try:
        yield failures
    finally:
        _COLLECTORS.remove(failures)


def describe(err: BaseException) -> str:
    """The exception's type and its message's last non-empty line (TVM puts the check that failed last, after
    the C++ traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def apply_first(func, target, rules, kernel: str):
    """The schedule of the first rule that takes ``func``, or None; rules that raise are recorded and skipped."""
    failed = []
    for rule in rules:
        try:
            space = rule.apply(func, target, False)
        except s_tir.ScheduleError:
            space = None  # a primitive that does not apply here: the rule declines, as rules are written to do
        except Exception as err:  # noqa: BLE001 - whatever a rule raises, the compile goes on
            failed.append((type(rule).__name__, describe(err)))
            continue
        if space is None:
            continue
        schedule = space[0] if isinstance(space, (list, tuple)) else space
        _record(kernel, failed, type(rule).__name__)
        return schedule
    _record(kernel, failed, None)
    return None


def _record(kernel: str, failed: list, scheduled_by: str | None) -> None:
    for rule, error in failed:
        for collector in _COLLECTORS:
            collector.append(RuleFailure(kernel, rule, error, scheduled_by))


@tvm.transform.module_pass(opt_level=0, name="ApplyRules")
class ApplyRules:
    """Schedule every unscheduled PrimFunc with the first rule that takes it (see the module docstring)."""

    def __init__(self, *rules):
        self.rules = list(rules)

    def transform_module(self, mod, _ctx):
        updated = {}
        for gvar, func in mod.functions_items():
            attrs = func.attrs if isinstance(func, tirx.PrimFunc) and func.attrs is not None else {}
            if not isinstance(func, tirx.PrimFunc) or attrs.get("tirx.is_scheduled", False):
                continue
            target = attrs.get("target") or tvm.target.Target.current(allow_none=False)
            schedule = apply_first(func, target, self.rules, gvar.name_hint)
            if schedule is not None:
                updated[gvar] = schedule.mod["main"].with_attr("tirx.is_scheduled", True)
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod
