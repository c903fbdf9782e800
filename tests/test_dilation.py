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


# pad_to_tiles rewrites dense convs only: for grouped, pooling and transposed-only cases its build would equal
# the baseline's, so they skip it (make test has a time budget).
DENSE_ONLY = {"pad_to_tiles"}
NOT_DENSE = {"depthwise_rate2", "depthwise_stride2_rate4", "grouped_rate3", "maxpool_dilated", "transposed_dilated"}
PAIRS = [(case, name) for name in OPTION_SETS for case in CASES
         if not (name in DENSE_ONLY and case.name in NOT_DENSE)]


@pytest.mark.parametrize("case, option_set", PAIRS, ids=[f"{c.name}-{n}" for c, n in PAIRS])
def test_dilated_case_matches_pytorch(case, option_set, host, build_root):
    options = OPTION_SETS[option_set]
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal(case.shape).astype("float32")}
    name = f"dilation-{case.name}-{'-'.join(k for k, v in options.key().items() if v) or 'baseline'}"
    src = source.from_torch(name, lambda: build(case), inputs)
    artifact = compile_model(CompileArgs(src, host, build_root, options=options))
    result = verify_model(artifact, host)
    print(report(result.checks, result.tolerance, result.notes))
    assert result.ok, report(result.checks, result.tolerance, result.notes)
