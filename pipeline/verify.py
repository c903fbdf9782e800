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
    sqnr_db: float | None = None  # reduced precision against the fp32 original (compare_reduced)
    argmax: float | None = None  # share of positions whose argmax over channels agrees (segmentation)
    steps: str = ""  # against the same QDQ graph in ONNX Runtime, in quantization steps (compare_steps)

    def line(self) -> str:
        status = "ok" if self.ok else "MISMATCH"
        if self.problem:
            return f"{self.name:<16} vs {self.reference:<12} {status}: {self.problem}"
        if self.steps:
            return f"{self.name:<16} vs {self.reference:<12} {self.steps}  max-abs {self.max_abs:.3e}  {status}"
        if self.sqnr_db is not None:
            agree = f"  argmax {100 * self.argmax:.2f}%" if self.argmax is not None else ""
            return (f"{self.name:<16} vs {self.reference:<12} SQNR {self.sqnr_db:.1f} dB  rel-L2 {self.rel_l2:.3e}"
                    f"  max-abs {self.max_abs:.3e}{agree}  {status}")
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


@dataclass(frozen=True)
class Criteria:
    """Pass criteria of a reduced-precision build (int8, fp16) against the fp32 original, and of an int8 build
    against ONNX Runtime running the same QDQ graph. The defaults are the issue's: int8 SQNR >= 25 dB and argmax
    agreement >= 98% where the output has classes along axis 1; fp16 rel-L2 <= 1e-2; at most one quantization
    step from ONNX Runtime per element (both round the same int32 sums once, at the scale, in float)."""

    precision: str
    min_sqnr_db: float = 25.0
    min_argmax: float = 0.98
    max_rel_l2: float = 1e-2
    max_steps: int = 1

    @property
    def rel_l2(self) -> float:
        """What the on-device checker (atrous-run, rel-L2 and max-abs only) applies: the rel-L2 bound, or for
        int8 the rel-L2 that the SQNR bound is (SQNR = -20 log10 rel-L2)."""
        return self.max_rel_l2 if self.precision == "fp16" else 10 ** (-self.min_sqnr_db / 20)

    @property
    def max_abs(self) -> float:
        return 1.0  # relative to max(1, max|ref|): the on-device check of a reduced-precision build is rel-L2's

    def describe(self) -> str:
        if self.precision == "fp16":
            return f"fp16 vs fp32: rel-L2 <= {self.max_rel_l2:g}"
        return (f"int8 vs fp32: SQNR >= {self.min_sqnr_db:g} dB, argmax agreement >= {100 * self.min_argmax:g}% "
                f"(outputs with classes on axis 1); vs the same QDQ graph in ONNX Runtime: <= {self.max_steps} "
                "quantization step(s) per element")


def sqnr_db(actual: np.ndarray, expected: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``actual`` against ``expected``: 10 log10(|e|^2 / |a - e|^2)."""
    noise = float(np.sum((actual - expected) ** 2))
    signal = float(np.sum(expected ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise) if signal > 0 else float("-inf")


def argmax_agreement(actual: np.ndarray, expected: np.ndarray) -> float | None:
    """Share of positions whose argmax over axis 1 (classes of a segmentation map, logits of a classifier) is the
    same in both; None where axis 1 holds fewer than two values."""
    if actual.ndim < 2 or actual.shape[1] < 2:
        return None
    return float(np.mean(np.argmax(actual, axis=1) == np.argmax(expected, axis=1)))


def compare_reduced(name: str, actual: np.ndarray, expected: np.ndarray, criteria: Criteria,
                    reference: str = "reference") -> OutputCheck:
    """A reduced-precision output against the fp32 original, by ``criteria``."""
    if actual.shape != expected.shape:
        return OutputCheck(name, reference, np.inf, np.inf, False,
                           f"got shape {list(actual.shape)}, expected {list(expected.shape)}")
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    if not np.isfinite(a).all():
        return OutputCheck(name, reference, np.inf, np.inf, False,
                           f"{int((~np.isfinite(a)).sum())} non-finite value(s) in the output")
    norm = float(np.linalg.norm(e))
    rel_l2 = float(np.linalg.norm(a - e) / norm) if norm > 0 else float(np.linalg.norm(a - e))
    max_abs = float(np.abs(a - e).max()) if a.size else 0.0
    ratio, agree = sqnr_db(a, e), argmax_agreement(a, e)
    if criteria.precision == "fp16":
        ok = rel_l2 <= criteria.max_rel_l2
    else:
        ok = ratio >= criteria.min_sqnr_db and (agree is None or agree >= criteria.min_argmax)
    return OutputCheck(name, reference, max_abs, rel_l2, ok, sqnr_db=ratio, argmax=agree)


def compare_steps(name: str, actual: np.ndarray, expected: np.ndarray, step: float, criteria: Criteria,
                  reference: str = "onnxruntime") -> OutputCheck:
    """An int8 output against another int8 run of the same graph, counted in quantization ``step``s."""
    if actual.shape != expected.shape:
        return OutputCheck(name, reference, np.inf, np.inf, False,
                           f"got shape {list(actual.shape)}, expected {list(expected.shape)}")
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    steps = np.rint(diff / step).astype(np.int64)
    worst = int(steps.max()) if steps.size else 0
    differing = int(np.count_nonzero(steps))
    if worst == 0:
        text = "bit-exact"
    else:
        text = (f"within {worst} step(s) of {step:.3g}: {differing} of {steps.size} elements "
                f"({100 * differing / steps.size:.2f}%) differ")
    norm = float(np.linalg.norm(expected))
    rel_l2 = float(np.sqrt(np.sum(diff ** 2)) / norm) if norm > 0 else 0.0
    return OutputCheck(name, reference, float(diff.max()) if diff.size else 0.0, rel_l2,
                       worst <= criteria.max_steps, steps=text)


def report(checks: list[OutputCheck], tolerance, notes=()) -> str:
    if hasattr(tolerance, "describe"):
        lines = [f"criteria: {tolerance.describe()}"]
    else:
        lines = [f"tolerance: rel-L2 <= {tolerance.rel_l2:g}, max-abs <= {tolerance.max_abs:g} x max(1, max|ref|)"]
    for check in checks:
        lines.append("  " + check.line())
        for index, got, want in check.worst:
            lines.append(f"      at {tuple(int(i) for i in index)}: got {got:.6g}, expected {want:.6g}, "
                         f"diff {abs(got - want):.3g}")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)
