"""`mlops-ci checks`: one commit status, mlops-ci/checks, for every model job of a pull request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlops_ci import cli
from mlops_ci.checks import CONTEXT, verdict

REPO = "acme/models"
HEAD = "c" * 40


def needs(model: str, changed: str = "true", **others: str) -> dict[str, Any]:
    jobs: dict[str, Any] = {
        "validate": {"result": others.get("validate", "success"), "outputs": {}},
        "plan": {"result": others.get("plan", "success"), "outputs": {"changed": changed}},
        "model": {"result": model, "outputs": {}},
    }
    return jobs


@pytest.mark.parametrize(
    ("jobs", "passed"),
    [
        (needs("success"), True),
        (needs("skipped", changed="false"), True),
        (needs("failure"), False),
        (needs("cancelled"), False),
        (needs("skipped", changed="true"), False),  # the model jobs never ran
        (needs("success", plan="failure"), False),
        (needs("success", validate="failure"), False),
        (needs("skipped", changed="", plan="failure"), False),
    ],
)
def test_verdict_is_green_only_when_every_job_succeeded(jobs: dict[str, Any], passed: bool) -> None:
    assert verdict(jobs).passed is passed


def test_a_failing_model_job_turns_the_status_red_on_the_head_commit(
    ghserver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    ghserver.add_repo(REPO)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 1, "head": {"sha": HEAD}}}))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("MLOPS_CI_NEEDS", json.dumps(needs("failure")))
    assert cli.main(["checks"]) == 1
    monkeypatch.setenv("MLOPS_CI_NEEDS", json.dumps(needs("success")))
    assert cli.main(["checks"]) == 0
    posted = [(s["sha"], s["context"], s["state"]) for s in ghserver.repos[REPO].statuses]
    assert posted == [(HEAD, CONTEXT, "failure"), (HEAD, CONTEXT, "success")]
    assert "model failure" in ghserver.repos[REPO].statuses[0]["description"]


def test_status_that_cannot_be_written_exits_2(
    ghserver: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("MLOPS_CI_NEEDS", json.dumps(needs("success")))
    ghserver.fail(rf"/repos/{REPO}/statuses/.*", 403, times=None)
    assert cli.main(["checks", "--sha", HEAD]) == 2
    assert "could not set the commit status mlops-ci/checks" in capsys.readouterr().err


def test_without_job_results_it_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("MLOPS_CI_NEEDS", raising=False)
    assert cli.main(["checks", "--no-status"]) == 2
    assert "toJSON(needs)" in capsys.readouterr().err
