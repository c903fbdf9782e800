"""Dilated convolutions against PyTorch through the whole pipeline (export, import, optimize, build, run)."""

import numpy as np
import pytest

from pipeline import source
from pipeline.interface import CompileArgs, compile_model, verify_model
from pipeline.verify import report

from dilation_cases import CASES, build


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_dilated_case_matches_pytorch(case, host, build_root):
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal(case.shape).astype("float32")}
    src = source.from_torch(f"dilation-{case.name}", lambda: build(case), inputs)
    artifact = compile_model(CompileArgs(src, host, build_root))
    result = verify_model(artifact, host)
    print(report(result.checks, result.tolerance, result.notes))
    assert result.ok, report(result.checks, result.tolerance, result.notes)
