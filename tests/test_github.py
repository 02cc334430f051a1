"""mlops_ci.github against the GitHub-compatible server: shapes, pagination, retries, errors."""

from __future__ import annotations

import json
import socket
from email.utils import formatdate

import pytest
import requests
from ghserver import GitHubServer

from mlops_ci import github
from mlops_ci.errors import MlopsCiError
from mlops_ci.github import GitHub, GitHubRetry, Review

REPO = "acme/models"


@pytest.fixture
def gh(ghserver: GitHubServer) -> GitHub:
    ghserver.add_repo(REPO)
    return GitHub(REPO, token="test-token", api_url=ghserver.url, max_wait=0.01)


def test_from_env_needs_a_repository_and_a_token(ghserver):
    with pytest.raises(MlopsCiError, match="GITHUB_REPOSITORY"):
        GitHub.from_env(environ={"GITHUB_TOKEN": "t"})
    with pytest.raises(MlopsCiError, match="GITHUB_TOKEN is not set"):
        GitHub.from_env(environ={"GITHUB_REPOSITORY": REPO})
    with pytest.raises(MlopsCiError, match="MLOPS_CI_GITHUB_MAX_WAIT must be a number"):
        GitHub.from_env(
            environ={
                "GITHUB_REPOSITORY": REPO,
                "GITHUB_TOKEN": "t",
                "MLOPS_CI_GITHUB_MAX_WAIT": "soon",
            }
        )


def test_pull_request_facts_come_from_the_pull_not_the_runner(ghserver, gh):
    pull = ghserver.repos[REPO].add_pull(3, author="carol", base_files={}, head_files={"a": "1"})
    pr = gh.pull_request(3)
    assert (pr.number, pr.author, pr.head_sha, pr.base_sha) == (
        3,
        "carol",
        pull.head_sha,
        pull.base_sha,
    )
    assert pr.from_fork is False


def test_files_are_paginated_and_keep_previous_filename(ghserver, gh):
    files = [(f"f{i:03}.txt", "modified") for i in range(230)]
    files.append(("new/model.yaml", "renamed", "old/model.yaml"))
    ghserver.repos[REPO].add_pull(3, files=files)
    listed = gh.pull_files(3)
    assert len(listed) == 231
    assert listed[-1] == github.ChangedFile("new/model.yaml", "renamed", "old/model.yaml")
    assert len(ghserver.calls("GET", rf"/repos/{REPO}/pulls/3/files")) == 3


def test_the_tree_diff_reads_a_file_moved_with_its_bytes_as_a_rename(ghserver, gh):
    """Past the files list's cap the changes come from the git trees: a moved file is the
    rename (or a second copy of it, a copy) GitHub's list shows, not a removal and an addition
    whose bytes look new; a move that changes the bytes stays a removal and an addition."""
    repo = ghserver.repos[REPO]
    repo.set_files("b", {"m/a.onnx": "w", "m/b.onnx": "x", "m/keep.onnx": "k", "m/c.onnx": "y"})
    after = {"n/a.onnx": "w", "o/a.onnx": "w", "m/keep.onnx": "k", "m/k2.onnx": "k"}
    repo.set_files("h", {**after, "n/b.onnx": "x", "m/c2.onnx": "y2"})
    assert gh.tree_changes("b", "h") == [
        github.ChangedFile("m/c.onnx", "removed"),
        github.ChangedFile("m/c2.onnx", "added"),
        github.ChangedFile("m/k2.onnx", "copied", "m/keep.onnx"),
        github.ChangedFile("n/a.onnx", "renamed", "m/a.onnx"),
        github.ChangedFile("n/b.onnx", "renamed", "m/b.onnx"),
        github.ChangedFile("o/a.onnx", "copied", "m/a.onnx"),
    ]


def test_reviews_keep_githubs_fields(ghserver, gh):
    pull = ghserver.repos[REPO].add_pull(3)
    pull.add_review("dave", "APPROVED", association="COLLABORATOR")
    pull.add_review("ci[bot]", "COMMENTED", user_type="Bot", commit_id="abc")
    first, second = gh.reviews(3)
    assert isinstance(first, Review)
    assert (first.login, first.state, first.commit_id, first.author_association) == (
        "dave",
        "APPROVED",
        pull.head_sha,
        "COLLABORATOR",
    )
    assert first.submitted_at
    assert second.is_bot and second.commit_id == "abc"


def test_commit_logins_include_authors_and_committers_but_not_web_flow(ghserver, gh):
    pull = ghserver.repos[REPO].add_pull(3, author="carol")
    pull.add_commit("dan", committer="web-flow")
    pull.add_commit(None, committer="erin")
    assert gh.commit_logins(3) == frozenset({"carol", "dan", "erin"})
    assert not ghserver.calls("GET", rf"/repos/{REPO}/commits/.*")  # no per-commit GETs


def test_file_text_decodes_and_is_none_when_absent_or_a_folder(ghserver, gh):
    repo = ghserver.repos[REPO]
    repo.set_files("abc123", {"m/model.yaml": "name: é\n" * 50})
    assert gh.file_text("m/model.yaml", "abc123") == "name: é\n" * 50
    assert gh.file_text("m/missing.yaml", "abc123") is None
    assert gh.file_text("m", "abc123") is None
    [read] = ghserver.calls("GET", rf"/repos/{REPO}/contents/m/model\.yaml")
    assert read.query == {"ref": ["abc123"]}


def test_team_membership_404_is_no_and_other_failures_raise(ghserver, gh):
    ghserver.add_team_member("@acme/gov", "dave")
    ghserver.add_team_member("@acme/gov", "pat", state="pending")
    assert gh.is_team_member("@acme/gov", "dave") is True
    assert gh.is_team_member("@acme/gov", "pat") is False
    assert gh.is_team_member("@acme/gov", "eve") is False
    assert gh.is_team_member("@acme/nope", "dave") is False
    for status in (401, 403, 500):
        ghserver.fail(r"/orgs/acme/teams/gov/memberships/dave", status, times=None)
        with pytest.raises(MlopsCiError, match=f"failed with {status}"):
            gh.is_team_member("@acme/gov", "dave")
        ghserver.faults.clear()


def test_status_description_is_cut_to_140_characters(ghserver, gh):
    gh.set_status("a" * 40, "failure", "x" * 300, "mlops-ci/governance", "http://run/1")
    [status] = ghserver.repos[REPO].statuses
    assert len(status["description"]) == 140
    assert status["target_url"] == "http://run/1"


def test_server_rejects_a_long_status_description_as_github_does(ghserver):
    ghserver.add_repo(REPO)
    answer = requests.post(
        f"{ghserver.url}/repos/{REPO}/statuses/{'a' * 40}",
        json={"state": "success", "description": "x" * 141},
        headers={"Authorization": "token test-token"},
        timeout=5,
    )
    assert answer.status_code == 422
    assert "description is too long" in answer.text


def test_sticky_comment_is_created_once_then_edited_even_past_the_first_page(ghserver, gh):
    ghserver.repos[REPO].add_pull(3)
    marker = "<!-- mlops-ci:report -->"
    for i in range(120):  # other people's comments push ours to page 2
        gh._repo.get_issue(3).create_comment(f"chatter {i}")
    comment_id, created = gh.upsert_comment(3, marker, "first")
    assert created
    assert gh.upsert_comment(3, marker, "second") == (comment_id, False)
    ours = [c for c in ghserver.repos[REPO].comments if marker in c["body"]]
    assert [c["body"] for c in ours] == [f"{marker}\nsecond"]
    assert ghserver.calls("PATCH", rf"/repos/{REPO}/issues/comments/{comment_id}")


def test_a_comment_quoting_the_marker_is_not_taken_for_ours(ghserver, gh):
    """Another workflow posting as the same bot may quote a pull request that typed our
    marker: that comment is not ours to overwrite."""
    ghserver.repos[REPO].add_pull(3)
    marker = "<!-- mlops-ci:report -->"
    quoted = f"Thanks! You wrote:\n> {marker} please merge"
    other = gh._repo.get_issue(3).create_comment(quoted)
    comment_id, created = gh.upsert_comment(3, marker, "report")
    assert created and comment_id != other.id
    bodies = {c["id"]: c["body"] for c in ghserver.repos[REPO].comments}
    assert bodies[other.id] == quoted and bodies[comment_id] == f"{marker}\nreport"


def test_server_errors_are_retried_then_reported_in_one_line(ghserver, gh):
    ghserver.repos[REPO].add_pull(3)
    ghserver.fail(rf"/repos/{REPO}/pulls/3", 503, times=2)
    assert gh.pull_request(3).number == 3
    ghserver.fail(rf"/repos/{REPO}/pulls/3", 500, times=None)
    with pytest.raises(MlopsCiError) as raised:
        gh.pull_request(3)
    assert str(raised.value) == (
        "GitHub API: reading pull request #3 of acme/models failed with 500: Server Error "
        "(GitHub kept failing after retries)"
    )


def test_a_create_that_github_made_before_its_answer_failed_is_not_made_twice(ghserver, gh):
    """A 502 from GitHub's proxy after GitHub acted: repeating the POST opened a second issue
    (the monitor's one-issue-per-model rule) or a second deployment."""
    ghserver.fail(rf"/repos/{REPO}/issues", 502, method="POST", after=True)
    with pytest.raises(MlopsCiError) as raised:
        gh.create_issue("iris needs attention", "body", ["mlops-ci/monitor"])
    assert "failed with 502" in str(raised.value) and "not repeated" in str(raised.value)
    assert len(ghserver.repos[REPO].issues) == 1
    ghserver.fail(rf"/repos/{REPO}/deployments", 503, method="POST", after=True)
    with pytest.raises(MlopsCiError, match="not repeated"):
        gh.create_deployment("a" * 40, "production", {}, "iris 1.0.0")
    assert len(ghserver.repos[REPO].deployments) == 1
    assert len(ghserver.calls("POST", rf"/repos/{REPO}/(issues|deployments)")) == 2


def test_a_rate_limited_create_and_a_failed_status_are_still_retried(ghserver, gh):
    """A rate limit is answered before GitHub acts, and a status set twice is set once."""
    ghserver.rate_limit(rf"/repos/{REPO}/issues", retry_after=0)
    assert gh.create_issue("iris needs attention", "body", []).number
    assert len(ghserver.repos[REPO].issues) == 1
    ghserver.fail(rf"/repos/{REPO}/statuses/{'b' * 40}", 502, method="POST", after=True)
    gh.set_status("b" * 40, "success", "approved", "mlops-ci/governance")
    assert [r.status for r in ghserver.calls("POST", rf"/repos/{REPO}/statuses/.*")] == [502, 201]


def test_rate_limit_429_with_retry_after_is_retried(ghserver, gh):
    ghserver.repos[REPO].add_pull(3)
    ghserver.rate_limit(rf"/repos/{REPO}/pulls/3", retry_after=1, status=429)
    assert gh.pull_request(3).number == 3
    assert [r.status for r in ghserver.calls("GET", rf"/repos/{REPO}/pulls/3")] == [429, 200]


def test_not_found_says_so(ghserver, gh):
    with pytest.raises(MlopsCiError, match="failed with 404: Not Found"):
        gh.pull_request(99)


def test_unreachable_api_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gh = GitHub(REPO, token="t", api_url=f"http://127.0.0.1:{port}", max_wait=0.01, retries=1)
    with pytest.raises(MlopsCiError, match="cannot reach the API"):
        gh.pull_request(1)


@pytest.mark.parametrize("url", ["notaurl", "api.github.com", "ftp://example.com", "https://"])
def test_an_api_url_that_is_not_http_is_one_clear_error(url, capsys, monkeypatch):
    # PyGithub's own constructor fails on these with an AttributeError (an "internal error")
    with pytest.raises(MlopsCiError, match="GITHUB_API_URL must be an http"):
        GitHub(REPO, token="t", api_url=url)
    from mlops_ci import cli

    monkeypatch.setenv("GITHUB_API_URL", url)
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    assert cli.main(["gate", "--pr", "1", "--no-status"]) == 2
    err = capsys.readouterr().err
    assert "GITHUB_API_URL must be an http" in err and "internal error" not in err


def test_requests_retry_error_becomes_an_mlops_ci_error():
    with pytest.raises(MlopsCiError, match="gave up after retries"), github._api("reading x"):
        raise requests.exceptions.RetryError("too many 500 error responses")


class _Response:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": formatdate(1_000_030, usegmt=True)}, 30.0),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1000020"}, 21.0),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9999999"}, 60.0),  # capped
        ({"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "1000020"}, 0.0),  # not limited
    ],
)
def test_wait_honours_retry_after_and_rate_limit_reset_up_to_the_cap(headers, expected):
    retry = GitHubRetry(total=3, max_wait=60)
    assert retry.wait_seconds(_Response(headers), now=1_000_000) == pytest.approx(expected)


def test_event_payload_gives_the_pull_request_number(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "submitted", "pull_request": {"number": 12}}))
    assert github.event_pull_number({"GITHUB_EVENT_PATH": str(event)}) == 12
    event.write_text(json.dumps({"action": "push"}))
    assert github.event_pull_number({"GITHUB_EVENT_PATH": str(event)}) is None
    assert github.event_pull_number({}) is None


def test_team_members_are_listed_across_pages_and_only_active(ghserver, gh):
    for i in range(150):
        ghserver.add_team_member("@acme/everyone", f"User{i}")
    ghserver.add_team_member("@acme/everyone", "invited", state="pending")
    members = gh.team_members("@acme/everyone")
    assert len(members) == 150
    assert "user7" in members and "invited" not in members
    assert len(ghserver.calls("GET", r"/orgs/acme/teams/everyone/members")) == 2
    assert gh.team_members("@acme/ghost") == frozenset()


def test_team_listing_forbidden_raises_with_the_teams_token_hint(ghserver, gh):
    ghserver.teams_token = "org-reader"
    ghserver.add_team_member("@acme/gov", "dave")
    with pytest.raises(MlopsCiError, match=r"403.*MLOPS_CI_TEAMS_TOKEN"):
        gh.team_members("@acme/gov")


def test_a_commits_list_short_of_its_count_below_githubs_cap_says_the_pull_request_moved(
    ghserver, gh
):
    """Short of the count, but under the 250 GitHub lists: a push came between reading the pull
    request and listing its commits, and squashing would be the wrong advice."""
    pull = ghserver.repos[REPO].add_pull(3)
    with pytest.raises(MlopsCiError, match="changed meanwhile") as raised:
        gh.commit_logins(3, expected=len(pull.commits) + 2)
    assert "squash" not in str(raised.value)
