"""Shared fixtures: the host preset and a session-wide build root outside the source tree."""

import os

import pytest


@pytest.fixture(scope="session")
def host():
    from atrous import targets

    return targets.get_target("host")


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    """Artifacts per test process; under pytest-xdist the runtime builds (``runtime/``) are shared by the workers,
    so each architecture's runtime is compiled once (build_runtime locks it while building)."""
    root = tmp_path_factory.mktemp("build")
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = tmp_path_factory.getbasetemp().parent / "runtime"
        shared.mkdir(exist_ok=True)
        (root / "runtime").symlink_to(shared, target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def avx2():
    """The host preset built for an AVX2 CPU (znver3), whatever this machine is: tests of a schedule's structure
    name the CPU they build for instead of inheriting this machine's (which differs between CI machines)."""
    from atrous import targets

    return targets.get_target("host", "znver3")
