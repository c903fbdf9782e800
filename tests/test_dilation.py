"""Dilated convolutions against PyTorch through the whole pipeline (export, import, optimize, build, run)."""

import numpy as np
import pytest

from pipeline import source
from pipeline.interface import CompileArgs, compile_model, verify_model
from pipeline.optimize import REWRITES, OptimizeOptions
from pipeline.verify import report

from dilation_cases import CASES, build


NONE = OptimizeOptions(**{name: False for name in REWRITES})
OPTION_SETS = {"baseline": NONE} | {name: NONE.__class__(**{**{r: False for r in REWRITES}, name: True})
                                   for name in REWRITES}


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_dilated_case_matches_pytorch(case, options, host, build_root):
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal(case.shape).astype("float32")}
    name = f"dilation-{case.name}-{'-'.join(k for k, v in options.key().items() if v) or 'baseline'}"
    src = source.from_torch(name, lambda: build(case), inputs)
    artifact = compile_model(CompileArgs(src, host, build_root, options=options))
    result = verify_model(artifact, host)
    print(report(result.checks, result.tolerance, result.notes))
    assert result.ok, report(result.checks, result.tolerance, result.notes)
