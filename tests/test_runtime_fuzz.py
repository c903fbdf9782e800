"""The runtime's parsers under libFuzzer with ASan and UBSan (runtime/fuzz/): each seed corpus, crashing inputs
found earlier included, replays clean, and each harness fuzzes for a short fixed budget without a crash.
``make fuzz-runtime SECONDS=N`` is the long run."""

import pytest

from atrous.pipeline.devices.fuzz_runtime import HARNESSES, build, corpus_dir, fuzz, replay

SECONDS = 5


@pytest.fixture(scope="module")
def harnesses(build_root):
    return build(build_root / "runtime-fuzz")


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_the_seed_corpus_replays_clean(harnesses, name):
    assert len(list(corpus_dir(name).iterdir())) >= 3
    done = replay(harnesses[name], name)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_a_short_fuzzing_run_finds_no_crash(harnesses, name, tmp_path):
    result = fuzz(harnesses[name], name, SECONDS, tmp_path)
    assert result.ok, result.log[-3000:]
    assert result.executions > 1000 and result.coverage > 20, (result.executions, result.coverage)
