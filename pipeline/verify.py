"""Stage: compare outputs against a reference with explicit tolerances, and explain any mismatch.

One helper for every target: shapes and dtypes first, then max-abs and relative-L2 error per output; on a
mismatch the report lists the worst elements so the culprit can be found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class OutputCheck:
    name: str
    reference: str
    max_abs: float
    rel_l2: float
    ok: bool
    problem: str = ""
    worst: tuple = field(default=(), repr=False)  # ((index, actual, expected), ...)
    loosened: str = ""  # the tolerance applied where the dtype needed a looser one (for_dtype)

    def line(self) -> str:
        status = "ok" if self.ok else "MISMATCH"
        if self.problem:
            return f"{self.name:<16} vs {self.reference:<12} {status}: {self.problem}"
        return (f"{self.name:<16} vs {self.reference:<12} max-abs {self.max_abs:.3e}  "
                f"rel-L2 {self.rel_l2:.3e}  {status}" + (f"  ({self.loosened})" if self.loosened else ""))


@dataclass(frozen=True)
class _Tolerance:
    rel_l2: float
    max_abs: float


# float16 resolves ~3 decimal digits: an fp16 output differs from another fp16 computation of it by an ulp or two
# (a different accumulation order or precision), whatever an fp32 tolerance says
FLOAT16 = _Tolerance(rel_l2=2e-3, max_abs=2e-3)


def for_dtype(tolerance, dtype):
    """``tolerance``, loosened to what the output's dtype can resolve (float16: FLOAT16)."""
    if np.dtype(dtype) == np.float16:
        return _Tolerance(max(tolerance.rel_l2, FLOAT16.rel_l2), max(tolerance.max_abs, FLOAT16.max_abs))
    return tolerance


def compare(name: str, actual: np.ndarray, expected: np.ndarray, tolerance, reference: str = "reference",
            worst_count: int = 5) -> OutputCheck:
    """Check one output. ``tolerance`` has ``rel_l2`` and ``max_abs`` (relative to max(1, max|expected|))."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return OutputCheck(name, reference, np.inf, np.inf, False,
                           f"got {actual.dtype}{list(actual.shape)}, expected {expected.dtype}{list(expected.shape)}")
    applied = for_dtype(tolerance, expected.dtype)
    loosened = (f"{expected.dtype} output: rel-L2 <= {applied.rel_l2:g}, max-abs <= {applied.max_abs:g} x scale"
                if applied is not tolerance else "")
    tolerance = applied
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        return OutputCheck(name, reference, np.inf, np.inf, False, f"{bad} non-finite value(s) in the output")
    diff = np.abs(a - e)
    max_abs = float(diff.max()) if diff.size else 0.0
    norm = float(np.linalg.norm(e))
    rel_l2 = float(np.linalg.norm(a - e) / norm) if norm > 0 else float(np.linalg.norm(a - e))
    scale = max(1.0, float(np.abs(e).max()) if e.size else 1.0)
    ok = rel_l2 <= tolerance.rel_l2 and max_abs <= tolerance.max_abs * scale
    worst = ()
    if not ok and diff.size:
        flat = np.argsort(diff, axis=None)[::-1][:worst_count]
        worst = tuple((np.unravel_index(i, diff.shape), float(a.flat[i]), float(e.flat[i])) for i in flat)
    return OutputCheck(name, reference, max_abs, rel_l2, ok, worst=worst, loosened=loosened)


def compare_all(actual: dict, expected: dict, tolerance, reference: str) -> list[OutputCheck]:
    missing = set(expected) - set(actual)
    checks = [OutputCheck(n, reference, np.inf, np.inf, False, "output missing") for n in sorted(missing)]
    return checks + [compare(n, actual[n], expected[n], tolerance, reference) for n in expected if n in actual]


def report(checks: list[OutputCheck], tolerance, notes=()) -> str:
    lines = [f"tolerance: rel-L2 <= {tolerance.rel_l2:g}, max-abs <= {tolerance.max_abs:g} x max(1, max|ref|)"]
    for check in checks:
        lines.append("  " + check.line())
        for index, got, want in check.worst:
            lines.append(f"      at {tuple(int(i) for i in index)}: got {got:.6g}, expected {want:.6g}, "
                         f"diff {abs(got - want):.3g}")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)
