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
        # a workflow wired by hand without the model job, or without plan, passed green
        ({k: v for k, v in needs("success").items() if k != "model"}, False),
        ({k: v for k, v in needs("success").items() if k != "plan"}, False),
    ],
)
def test_verdict_is_green_only_when_every_job_succeeded(jobs: dict[str, Any], passed: bool) -> None:
    assert verdict(jobs).passed is passed


def test_a_failing_model_job_turns_the_status_red_on_the_head_commit(
    ghserver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    ghserver.add_repo(REPO)
    event = tmp_path / "event.json"
    base = {"ref": "main", "repo": {"default_branch": "main"}}
    pull = {"number": 1, "head": {"sha": HEAD}, "base": base}
    event.write_text(json.dumps({"pull_request": pull}))
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


# --- a pull request into another branch: its own context -------------------------------------


def _run_checks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, number: int, base: str, jobs: Any
) -> int:
    """`mlops-ci checks` as the workflow's checks job runs it for pull request `number` of head
    HEAD into `base` (the repository's default branch is main)."""
    event = tmp_path / f"event-{number}.json"
    pull = {
        "number": number,
        "head": {"sha": HEAD, "ref": "feature"},
        "base": {"ref": base, "sha": "b" * 40, "repo": {"default_branch": "main"}},
    }
    payload = {"action": "opened", "pull_request": pull, "repository": {"default_branch": "main"}}
    event.write_text(json.dumps(payload))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("MLOPS_CI_NEEDS", json.dumps(jobs))
    return cli.main(["checks"])


def _latest(server: Any) -> dict[str, str]:
    """The state of each context on HEAD as GitHub shows it on every pull request of that head:
    the latest status per context, contexts compared case-insensitively as GitHub does."""
    latest: dict[str, str] = {}
    for s in server.repos[REPO].statuses:
        if s["sha"] == HEAD:
            latest[s["context"].lower()] = s["state"]
    return latest


def test_a_pull_request_into_another_branch_never_turns_main_s_checks_green(
    ghserver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Head H = M (changes a model, which fails its thresholds) + N (anything). Its pull request
    into main posts mlops-ci/checks = failure on H. The author then opens a second pull request
    of the same head into a branch cut at M: counted from there no model changed, the model job
    is skipped, and "No model changed" = success lands on H. A status belongs to the commit, the
    latest per context wins, so main's pull request would show its checks passed."""
    ghserver.add_repo(REPO)
    assert _run_checks(monkeypatch, tmp_path, number=1, base="main", jobs=needs("failure")) == 1
    skipped = needs("skipped", changed="false")
    assert _run_checks(monkeypatch, tmp_path, number=2, base="evil", jobs=skipped) == 0
    latest = _latest(ghserver)
    assert latest[CONTEXT] == "failure"  # what main's branch protection requires
    assert latest[f"{CONTEXT} (evil)"] == "success"  # what only a pull request into evil reads
    # no run for the pull request into evil ever wrote main's context
    assert [s["state"] for s in ghserver.repos[REPO].statuses if s["context"] == CONTEXT] == [
        "failure"
    ]
    assert "mlops-ci/checks (evil): passed" in capsys.readouterr().out


def test_an_odd_branch_name_gets_a_context_github_accepts(
    ghserver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    ghserver.add_repo(REPO)
    base = "Release/" + "é" * 150  # 308 bytes: escaped, cut, and named by a digest
    assert _run_checks(monkeypatch, tmp_path, number=3, base=base, jobs=needs("success")) == 0
    (posted,) = ghserver.repos[REPO].statuses
    assert posted["context"].startswith(f"{CONTEXT} (^release/%C3%A9")
    assert len(posted["context"]) <= 255 and posted["state"] == "success"


def test_an_event_that_names_no_base_posts_nothing(
    ghserver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A guessed base could be the default branch's context: no guess, no status, exit 2."""
    ghserver.add_repo(REPO)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 1, "head": {"sha": HEAD}}}))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("MLOPS_CI_NEEDS", json.dumps(needs("skipped", changed="false")))
    assert cli.main(["checks"]) == 2
    assert "did not name the pull request's base branch" in capsys.readouterr().err
    assert ghserver.repos[REPO].statuses == []


def test_a_legacy_command_split_across_a_flush_is_no_command() -> None:
    """The runner reads `##[` anywhere in a line as a (legacy) workflow command. The output
    guard wrote a partial line at a flush, so text ending in `#` before the flush and starting
    with `#[` or `[` after it met only in the log: `##[error]` (it fired)."""
    import io

    from mlops_ci import gha

    for before, after in (("x ##", "[error]pwned\n"), ("x #", "#[error]pwned\n")):
        assert "##[" in before + after  # armed: the line the runner reads
        raw = io.StringIO()
        guard = gha._CommandGuard(raw)
        guard.write(before)
        guard.flush()
        guard.write(after)
        guard.close_line()
        assert "##[" not in raw.getvalue(), raw.getvalue()
        assert raw.getvalue().replace("\u200b", "") == before + after  # still readable
