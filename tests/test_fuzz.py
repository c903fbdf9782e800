"""The graph fuzzer (pipeline/fuzz.py): a fixed slice of random conv nets against ONNX Runtime, every graph it
ever found failing (tests/fuzz_corpus/, shrunk by Hypothesis) replayed, and the generator's own behaviour."""

import json
from collections import Counter

import onnx
import pytest

from atrous.pipeline import fuzz

CASES = sorted(fuzz.CORPUS.glob("*.onnx"))


@pytest.mark.slow
def test_a_fixed_slice_of_random_graphs_compiles_and_matches_onnxruntime(tmp_path):
    """16 graphs, seed 0: each compiles and matches ONNX Runtime, or is refused with a one-line AtrousError."""
    stats = fuzz.run(16, seed=0, corpus=tmp_path)
    assert sum(stats.values()) >= 16, stats  # graphs ONNX Runtime refuses are not counted
    assert stats[("conv", "ok")] + stats[("conv", "refused")] > 0


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_every_graph_the_fuzzer_found_failing_now_compiles_and_matches(path):
    record = json.loads(path.with_suffix(".json").read_text())
    outcome = fuzz.check(onnx.load(str(path)), record["shape"])
    assert outcome.status == "ok", f"{path.name} (found failing with {record['error'][:200]}): {outcome}"


def test_graphs_cover_the_vocabulary_and_every_one_is_a_valid_model():
    from hypothesis import HealthCheck, given, seed, settings

    seen, ops = Counter(), Counter()

    @seed(3)
    @settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(fuzz.graphs())
    def draw(case):
        model, shape, families = case
        onnx.checker.check_model(model, full_check=True)
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == shape[0]
        seen.update(families)
        ops.update(node.op_type for node in model.graph.node)

    draw()
    assert set(fuzz.FAMILIES) <= set(seen), set(fuzz.FAMILIES) - set(seen)
    for op in ("Conv", "ConvTranspose", "Resize", "Pad", "Slice", "Gather", "Split", "Concat", "Gemm"):
        assert ops[op], op


def test_the_float64_tie_break_excuses_reference_rounding_only(tmp_path, monkeypatch):
    """A mismatch with ONNX Runtime on an output that cancels is settled against a float64 evaluation: atrous
    passes when it is closer to it than ONNX Runtime is, and a real error is not excused."""
    import numpy as np
    import onnxruntime

    from atrous import targets
    from atrous.pipeline import source
    from atrous.pipeline.interface import CompileArgs, compile_model
    from atrous.pipeline.runner import CompiledModel

    path = fuzz.CORPUS / "conv-head-63b049f9dd83.onnx"  # mean of a conv whose terms cancel 225-fold
    model = onnx.load(str(path))
    x = np.random.default_rng(0).standard_normal((1, 2, 17)).astype(np.float32)
    src = source.from_onnx_file(path)
    host = targets.get_target("host")
    artifact = compile_model(CompileArgs(source.Source(src.name, {"x": x}, src.output_names, onnx_path=path), host,
                                         tmp_path, tuned=False, force=True))
    theirs = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert fuzz._closer_to_float64(model, artifact, x, theirs, host.tolerance)
    run = CompiledModel.run
    monkeypatch.setattr(CompiledModel, "run", lambda self, inputs: {k: v * 1.001 for k, v in run(self, inputs).items()})
    assert not fuzz._closer_to_float64(model, artifact, x, theirs, host.tolerance)
