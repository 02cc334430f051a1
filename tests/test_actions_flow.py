"""The reusable workflow's pull-request flow and governance gate, run for real with act.

Each test runs the example repository's caller workflow (a git copy of examples/model-repo) with
act against the GitHub test server of tests/ghserver.py on 127.0.0.1, and asserts what the
server received: the sticky report comment, the commit statuses. Artifacts travel between jobs
through the harness's artifact stubs, so what the report job reads is what the model jobs
uploaded.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import urllib.request
from typing import TYPE_CHECKING, Any

import onnx
import pytest
from act_harness import (
    TOKEN,
    ActHarness,
    ActRun,
    ModelRepo,
    pull_request_event,
    pull_request_review_event,
)

if TYPE_CHECKING:
    from ghserver import GitHubServer, Pull

pytestmark = pytest.mark.act

MARKER = "<!-- mlops-ci:report -->"
GOVERNANCE = "mlops-ci/governance"
CHECKS = "mlops-ci/checks"
#: Seconds per benchmark configuration: enough for a verdict, small enough for a test.
BENCH_TIME_BUDGET = "0.02"
TEAMS_TOKEN = "ghs_offline_act_teams_token_9876543210"
FORK_REPO_WORKFLOW = ".github/workflows/mlops-ci-fork-report.yml"


# --- helpers ------------------------------------------------------------------------------------


def _files_at(repo: ModelRepo, ref: str) -> dict[str, bytes]:
    """Every file of `repo` at commit `ref`: what the contents API serves there."""
    data = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=repo.path, check=True, capture_output=True
    ).stdout
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                files[member.name] = extracted.read()
    return files


def _ready_repo(act_harness: ActHarness) -> ModelRepo:
    """The example repository, its caller asking for a tiny benchmark budget, as the base."""
    return act_harness.model_repo().with_caller(
        {"bench-time-budget": f'"{BENCH_TIME_BUDGET}"'}, "Benchmark briefly"
    )


def _change_model(repo: ModelRepo, model: str, version: str) -> ModelRepo:
    """Commit a new version of `model` that changes its description (no retraining needed)."""
    manifest = repo.path / "models" / model / "model.yaml"
    text = manifest.read_text(encoding="utf-8")
    text, bumped = re.subn(r"(?m)^(  version: )\S+", rf"\g<1>{version}", text, count=1)
    text, described = re.subn(
        r"(?m)^(  description: >-\n)", rf"\g<1>    (Release {version}.)\n", text, count=1
    )
    assert bumped == described == 1, f"unexpected layout of {manifest}"
    manifest.write_text(text, encoding="utf-8")
    return repo.commit(f"{model} {version}")


def _mirror_pull(server: GitHubServer, repo: ModelRepo, number: int, author: str) -> Pull:
    """Pull request `number` on the server, with the git repository's files at base and head."""
    remote = server.repos.get(repo.repository) or server.add_repo(repo.repository)
    return remote.add_pull(
        number,
        author=author,
        base_sha=repo.base,
        head_sha=repo.head,
        base_files=_files_at(repo, repo.base),
        head_files=_files_at(repo, repo.head),
    )


def _push(server: GitHubServer, pull: Pull, repo: ModelRepo) -> None:
    """A new push to the pull request: the server's head moves to `repo.head`."""
    pull.repo.set_files(repo.head, _files_at(repo, repo.head))
    pull.push(repo.head)


def _mock_post(server: GitHubServer, path: str, body: dict[str, Any]) -> Any:
    """POST to the server's /_mock/ API over HTTP, as a test in another process would."""
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _comments(server: GitHubServer, repo: ModelRepo, number: int) -> list[dict[str, Any]]:
    return [c for c in server.repos[repo.repository].comments if c["_issue"] == number]


def _statuses(server: GitHubServer, repo: ModelRepo) -> list[tuple[str, str, str]]:
    """(sha, context, state) of every status the server received, in order."""
    return [(s["sha"], s["context"], s["state"]) for s in server.repos[repo.repository].statuses]


def _sync_event(repo: ModelRepo, number: int = 1, author: str = "carol") -> dict[str, Any]:
    event = pull_request_event(repo, number=number, author=author)
    event["action"] = "synchronize"
    return event


def _timed(label: str, run: ActRun) -> None:
    print(f"act run ({label}): {run.seconds:.2f}s")


# --- the pull-request flow ----------------------------------------------------------------------


def test_pull_request_checks_only_the_changed_model_and_keeps_one_sticky_comment(
    act_harness: ActHarness, ghserver: GitHubServer
) -> None:
    ghserver.token = TOKEN
    repo = _change_model(_ready_repo(act_harness), "tumor-classifier", "1.0.1")
    pull = _mirror_pull(ghserver, repo, 1, author="carol")

    run = act_harness.run(repo, "pull_request", _sync_event(repo), api_url=ghserver.url)
    _timed("pull request, one changed model", run)

    for job in ("validate", "plan", "environment", "model", "report"):
        assert run.job_result(job) == "success", f"{job}\n{run.explain()}"
    matrix = json.loads(run.outputs("plan", "plan")["matrix"])
    assert [m["name"] for m in matrix["include"]] == ["tumor-classifier"], run.explain()
    # One environment per distinct extra is set up before the model jobs, which restore it.
    assert json.loads(run.outputs("plan", "plan")["environments"]) == ["xgboost"]
    # Only the changed model was set up, converted, tested and benchmarked, with its own extra.
    assert run.job_results("model") == ["success"], run.explain()
    assert "extras: xgboost" in run.log("model"), run.explain()
    assert run.artifact_names() == [
        "mlops-ci-onnx-tumor-classifier",
        "mlops-ci-report-tumor-classifier",
    ], run.explain()
    assert run.artifacts is not None
    uploaded = run.artifacts / "mlops-ci-report-tumor-classifier"
    assert {p.name for p in uploaded.iterdir()} == {
        "validate.json",
        "convert.json",
        "convert.md",
        "test.json",
        "bench.json",
    }
    onnx_model = onnx.load(str(run.artifacts / "mlops-ci-onnx-tumor-classifier" / "model.onnx"))
    assert [o.name for o in onnx_model.graph.output] == ["label", "probabilities"]
    bench = json.loads((uploaded / "bench.json").read_text(encoding="utf-8"))
    # The caller's bench-time-budget reached `mlops-ci bench` (the manifest says 0.5).
    assert bench["settings"]["time_budget_s"] == float(BENCH_TIME_BUDGET)
    assert bench["baseline"] is None  # no deployed version to compare with yet

    comments = _comments(ghserver, repo, 1)
    assert len(comments) == 1, run.explain()
    body = comments[0]["body"]
    assert body.startswith(MARKER)
    assert "tumor-classifier" in body and "1.0.1" in body
    for section in ("Validation", "Conversion and parity", "Tests", "Metrics", "Benchmark"):
        assert f"#### {section}" in body, f"no {section} section in:\n{body}"
    assert "✅ parity on" in body and "<code>roc&#95;auc</code>" in body and " µs |" in body
    assert "```mermaid" in body and "ONNX speed-up over native" in body
    # The other three models were not touched, so they are not in the report.
    for other in ("diabetes-risk", "disease-progression", "digit-recognizer"):
        assert other not in body
    summary = run.summary("report")
    assert "tumor-classifier 1.0.1" in summary and "#### Benchmark" in summary, run.explain()

    # A second push to the same pull request raises an accuracy floor above what the model
    # reaches (0.972): the model job fails, yet the benchmark still runs, the report still
    # arrives, and the one comment is edited in place, not duplicated.
    first_head = repo.head
    manifest = repo.path / "models" / "tumor-classifier" / "model.yaml"
    text = manifest.read_text(encoding="utf-8")
    assert "{metric: accuracy, min: 0.93}" in text
    manifest.write_text(
        text.replace("{metric: accuracy, min: 0.93}", "{metric: accuracy, min: 0.99}"),
        encoding="utf-8",
    )
    repo = _change_model(repo, "tumor-classifier", "1.0.2")
    _push(ghserver, pull, repo)
    again = act_harness.run(repo, "pull_request", _sync_event(repo), api_url=ghserver.url)
    _timed("synchronize, same model, a failing metric", again)

    assert again.job_results("model") == ["failure"], again.explain()
    assert again.job_result("report") == "success", again.explain()
    assert again.artifacts is not None
    assert (again.artifacts / "mlops-ci-report-tumor-classifier" / "bench.json").is_file()
    comments = _comments(ghserver, repo, 1)
    assert len(comments) == 1, again.explain()
    body = comments[0]["body"]
    assert "tumor-classifier 1.0.2" in body and "tumor-classifier 1.0.1" not in body
    assert re.search(r"❌ \|\s*<code>accuracy</code>\s*\|\s*0\.972\s*\|\s*≥ 0\.99", body), body
    written = [
        (c.method, c.path)
        for c in ghserver.calls()
        if c.method in ("POST", "PATCH") and "/comments" in c.path
    ]
    comment_id = comments[0]["id"]
    assert written == [
        ("POST", "/repos/acme/models/issues/1/comments"),
        ("PATCH", f"/repos/acme/models/issues/comments/{comment_id}"),
    ]
    # The gate ran on both pushes and judged each head commit (tumor-classifier, risk medium,
    # has no owner's approval), never the test-merge commit.
    assert run.job_result("gate") == again.job_result("gate") == "failure"
    assert [
        (sha, state) for sha, context, state in _statuses(ghserver, repo) if context == GOVERNANCE
    ] == [
        (first_head, "pending"),
        (first_head, "failure"),
        (repo.head, "pending"),
        (repo.head, "failure"),
    ]
    # The aggregate check: green while the model passed, red once its metric fails, on each
    # head commit, so a failing model blocks the merge even after approval.
    assert run.job_result("checks") == "success", run.explain()
    assert again.job_result("checks") == "failure", again.explain()
    assert [
        (sha, state) for sha, context, state in _statuses(ghserver, repo) if context == CHECKS
    ] == [(first_head, "success"), (repo.head, "failure")]


def test_a_pull_request_into_another_branch_posts_only_that_branch_s_contexts(
    act_harness: ActHarness, ghserver: GitHubServer
) -> None:
    """The checks attack, run for real: head N (a README edit) sits on M (a tumor-classifier
    release). Its pull request into main got mlops-ci/checks = failure on N (stood in for here:
    the flow test above runs that part). The author opens a pull request of the same head into
    `develop`, cut at M: no model changed, so the checks and the gate pass there, and must do so
    under `(develop)` only; main's contexts on N stay as main's pull request left them."""
    ghserver.token = TOKEN
    released = _change_model(_ready_repo(act_harness), "tumor-classifier", "1.0.1")
    (released.path / "README.md").write_text("N\n", encoding="utf-8")
    repo = ModelRepo(released.path, released.repository, released.head, released.commit("N").head)
    remote = ghserver.add_repo(repo.repository)
    remote.statuses.append({"sha": repo.head, "context": CHECKS, "state": "failure"})
    pull = _mirror_pull(ghserver, repo, 2, author="carol")
    pull.base_ref = "develop"
    event = pull_request_event(repo, number=2, author="carol")
    event["pull_request"]["base"]["ref"] = "develop"

    run = act_harness.run(repo, "pull_request", event, api_url=ghserver.url)
    _timed("pull request into develop, no model changed", run)

    assert run.outputs("plan", "plan")["changed"] == "false", run.explain()
    assert run.job_result("checks") == run.job_result("gate") == "success", run.explain()
    # gate and checks run side by side: their statuses arrive in either order
    first, *posted = _statuses(ghserver, repo)
    assert first == (repo.head, CHECKS, "failure")  # main's, untouched
    assert sorted(posted) == [
        (repo.head, f"{CHECKS} (develop)", "success"),
        (repo.head, f"{GOVERNANCE} (develop)", "pending"),
        (repo.head, f"{GOVERNANCE} (develop)", "success"),
    ], run.explain()


# --- the governance gate ------------------------------------------------------------------------


def test_review_that_completes_the_approvals_flips_the_governance_status_to_success(
    act_harness: ActHarness, ghserver: GitHubServer
) -> None:
    # diabetes-risk is high risk: 2 approvals from its owners (@acme/risk-ml, @alice) and one
    # from @acme/ml-governance (examples/model-repo/.mlops/policy.yaml).
    ghserver.token = TOKEN
    ghserver.teams_token = TEAMS_TOKEN  # team look-ups need the caller's teams-token secret
    ghserver.add_team_member("@acme/risk-ml", "erin")
    ghserver.add_team_member("@acme/ml-governance", "erin")
    repo = _change_model(_ready_repo(act_harness), "diabetes-risk", "1.0.1")
    pull = _mirror_pull(ghserver, repo, 7, author="carol")
    pull.add_review("alice", "APPROVED")
    secrets = {"MLOPS_CI_TEAMS_TOKEN": TEAMS_TOKEN}

    review = pull_request_review_event(repo, "alice", number=7, author="carol")
    first = act_harness.run(
        repo, "pull_request_review", review, api_url=ghserver.url, secrets=secrets
    )
    _timed("pull_request_review, approvals missing", first)

    assert first.job_result("gate") == "failure", first.explain()
    # On a review only the gate runs: nothing of the pull request is built or checked out.
    for job in ("validate", "plan", "model", "report"):
        assert first.job_result(job) is None, first.explain()
    statuses = ghserver.repos[repo.repository].statuses
    assert [(s["sha"], s["context"], s["state"]) for s in statuses] == [
        (repo.head, GOVERNANCE, "pending"),
        (repo.head, GOVERNANCE, "failure"),
    ], first.explain()
    assert "diabetes-risk" in statuses[-1]["description"]
    assert "Gate error" not in statuses[-1]["description"]

    # The last required approval: an owner (member of @acme/risk-ml) who is in governance too.
    _mock_post(
        ghserver,
        "/_mock/reviews",
        {"repo": repo.repository, "number": 7, "login": "erin", "state": "APPROVED"},
    )
    review = pull_request_review_event(repo, "erin", number=7, author="carol")
    second = act_harness.run(
        repo, "pull_request_review", review, api_url=ghserver.url, secrets=secrets
    )
    _timed("pull_request_review, last approval", second)

    assert second.job_result("gate") == "success", second.explain()
    assert _statuses(ghserver, repo) == [
        (repo.head, GOVERNANCE, "pending"),
        (repo.head, GOVERNANCE, "failure"),
        (repo.head, GOVERNANCE, "pending"),
        (repo.head, GOVERNANCE, "success"),
    ], second.explain()
    # Team membership was read with the teams token, and with nothing else.
    team_calls = ghserver.calls("GET", r"/orgs/.*")
    assert team_calls, second.explain()
    assert {c.headers.get("Authorization") for c in team_calls} == {f"token {TEAMS_TOKEN}"}


# --- pull requests from forks -------------------------------------------------------------------


def test_fork_pull_request_report_is_posted_by_the_workflow_run_relay(
    act_harness: ActHarness, ghserver: GitHubServer
) -> None:
    ghserver.token = TOKEN
    repo = _change_model(_ready_repo(act_harness), "disease-progression", "1.0.1")
    _mirror_pull(ghserver, repo, 3, author="mallory")
    # A fork's token is read-only: GitHub answers 403 to every write.
    denied = {"message": "Resource not accessible by integration"}
    ghserver.fail(
        r"/repos/acme/models/issues/\d+/comments", 403, method="POST", times=None, body=denied
    )
    ghserver.fail(r"/repos/acme/models/statuses/\w+", 403, method="POST", times=None, body=denied)
    event = _sync_event(repo, number=3, author="mallory")
    event["pull_request"]["head"]["repo"] = {
        **event["pull_request"]["head"]["repo"],
        "full_name": "mallory/models",
        "owner": {"login": "mallory", "type": "User"},
    }

    run = act_harness.run(repo, "pull_request", event, api_url=ghserver.url)
    _timed("fork pull request", run)

    assert run.job_result("model") == "success", run.explain()
    assert run.job_result("report") == "success", run.explain()
    assert _comments(ghserver, repo, 3) == []
    assert run.artifact_names() == [
        "mlops-ci-onnx-disease-progression",
        "mlops-ci-pr-comment",
        "mlops-ci-report-disease-progression",
    ], run.explain()
    assert run.artifacts is not None
    prepared = json.loads(
        (run.artifacts / "mlops-ci-pr-comment" / "pr-comment.json").read_text(encoding="utf-8")
    )
    assert prepared["pr"] == 3 and prepared["head_sha"] == repo.head
    # The gate cannot post its status with a read-only token either: it fails, never passes.
    assert run.job_result("gate") == "failure"
    assert _statuses(ghserver, repo) == []

    # The workflow_run relay, in the base repository's context, posts the prepared comment.
    with ghserver.lock:
        ghserver.faults.clear()
    relay_event = {
        "action": "completed",
        "workflow_run": {
            "id": 4242,
            "name": "mlops-ci",
            "event": "pull_request",
            "status": "completed",
            "conclusion": "failure",
            "head_sha": repo.head,
            "head_branch": "feature",
            "head_repository": {"full_name": "mallory/models"},
            "repository": {"full_name": repo.repository},
        },
        "repository": event["repository"],
        "sender": {"login": "mallory", "type": "User"},
    }
    relay = act_harness.run(
        repo,
        "workflow_run",
        relay_event,
        workflow=FORK_REPO_WORKFLOW,
        api_url=ghserver.url,
        artifact_store=run.artifacts,
    )
    _timed("workflow_run relay", relay)

    assert relay.job_result("post") == "success", relay.explain()
    comments = _comments(ghserver, repo, 3)
    assert len(comments) == 1, relay.explain()
    assert comments[0]["body"].startswith(MARKER)
    assert "disease-progression" in comments[0]["body"]
    assert "#### Benchmark" in comments[0]["body"]
