"""Shared fixtures: the host preset and a session-wide build root outside the source tree."""

import pytest


@pytest.fixture(scope="session")
def host():
    import targets

    return targets.get_target("host")


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("build")
