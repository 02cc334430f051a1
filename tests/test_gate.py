"""Scenario tests of `mlops-ci gate` end to end: the real command, PyGithub, real HTTP to the
GitHub-compatible server in tests/ghserver.py. Each test sets up a pull request, runs the gate
and asserts the exit code, the decision and the commit status GitHub would have received."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from ghserver import GitHubServer, Pull, fake_sha

from mlops_ci import cli

REPO = "acme/models"
CONTEXT = "mlops-ci/governance"
SHA256 = "0" * 64


def manifest(name: str, risk: str = "medium", owners: tuple[str, ...] = ("@alice",)) -> str:
    owner_list = ", ".join(f'"{o}"' for o in owners)
    return (
        "apiVersion: mlops-ci/v1\n"
        "kind: Model\n"
        "metadata:\n"
        f"  name: {name}\n"
        "  version: 1.0.0\n"
        f"  owners: [{owner_list}]\n"
        f"  risk: {risk}\n"
        "spec:\n"
        "  framework: onnx\n"
        "  artifact:\n"
        "    path: model.onnx\n"
        f"    sha256: {SHA256}\n"
    )


def policy_yaml(tiers: str, owners: str = "") -> str:
    return "apiVersion: mlops-ci/v1\nkind: Policy\n" + owners + "tiers:\n" + tiers


def version_bump(text: str) -> str:
    return text.replace("version: 1.0.0", "version: 1.1.0")


def open_pull(
    server: GitHubServer,
    base: dict[str, str],
    head: dict[str, str],
    *,
    author: str = "carol",
    number: int = 7,
) -> Pull:
    repo = server.repos.get(REPO) or server.add_repo(REPO)
    return repo.add_pull(number, author=author, base_files=base, head_files=head)


def run_gate(
    capsys: pytest.CaptureFixture[str], *extra: str, number: int = 7
) -> tuple[int, dict[str, Any]]:
    """Run `mlops-ci gate --format json`; returns (exit code, decision or {})."""
    code = cli.main(["gate", "--pr", str(number), "--repo", REPO, "--format", "json", *extra])
    captured = capsys.readouterr()
    sys.stderr.write(captured.err)  # left for the test to read with capsys
    return code, (json.loads(captured.out) if captured.out.strip() else {})


def statuses(server: GitHubServer) -> list[dict[str, Any]]:
    return [s for s in server.repos[REPO].statuses if s["context"] == CONTEXT]


def last_status(server: GitHubServer) -> dict[str, Any]:
    found = statuses(server)
    assert found, "the gate posted no status"
    return found[-1]


def model_change(
    server: GitHubServer,
    risk: str = "medium",
    owners: tuple[str, ...] = ("@alice",),
    author: str = "carol",
) -> Pull:
    """A pull request that changes one model, fraud-detector."""
    text = manifest("fraud-detector", risk, owners)
    return open_pull(
        server,
        {"models/fraud/model.yaml": text},
        {"models/fraud/model.yaml": version_bump(text)},
        author=author,
    )


# --- the basics -------------------------------------------------------------------------------


def test_pull_request_touching_no_model_passes_with_the_reason(ghserver, capsys):
    open_pull(ghserver, {"README.md": "a"}, {"README.md": "b"})
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["approved"] is True
    assert "nothing to approve" in decision["reason"]
    status = last_status(ghserver)
    assert status["state"] == "success"
    assert status["description"] == "No model changed: nothing to approve"


def test_owner_approval_on_the_head_commit_approves_a_medium_model(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["approvals_counted"] == ["alice"]
    assert last_status(ghserver)["state"] == "success"
    assert last_status(ghserver)["description"] == "Approved: fraud-detector"


def test_missing_approval_fails_and_says_what_is_missing(ghserver, capsys):
    model_change(ghserver)
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["missing"] == [
        "fraud-detector (risk: medium) needs 1 more approval from its owners (@alice)"
    ]
    status = last_status(ghserver)
    assert status["state"] == "failure"
    assert status["description"].startswith("fraud-detector (risk: medium) needs 1 more approval")


def test_status_is_posted_on_the_head_sha_not_github_sha(ghserver, capsys, monkeypatch, tmp_path):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    merge_sha = fake_sha("test-merge-commit")
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps(
            {
                "action": "synchronize",
                "number": 7,
                "pull_request": {
                    "number": 7,
                    "head": {"sha": pull.head_sha},
                    "base": {"sha": pull.base_sha},
                },
            }
        )
    )
    monkeypatch.setenv("GITHUB_SHA", merge_sha)
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    code = cli.main(["gate"])  # number and repository from the runner
    assert code == 0
    assert ghserver.calls("POST", rf"/repos/{REPO}/statuses/{pull.head_sha}")
    assert not ghserver.calls("POST", rf"/repos/{REPO}/statuses/{merge_sha}")


def test_self_approval_never_counts(ghserver, capsys):
    pull = model_change(ghserver, owners=("@carol", "@alice"), author="carol")
    pull.add_review("carol", "APPROVED", association="OWNER")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["approvals_counted"] == []
    [ignored] = decision["ignored"]
    assert ignored["login"] == "carol"
    assert ignored["reason"] == "is the pull request's author"


def test_co_author_who_pushed_commits_cannot_approve(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_commit("alice")  # alice pushed to the pull request, so she is an author too
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["ignored"][0]["reason"] == "pushed commits to this pull request"


def test_approval_then_new_push_is_stale(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    old_head = pull.head_sha
    new_head = pull.push()
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["head_sha"] == new_head
    assert decision["ignored"][0]["reason"] == "approved an older commit, not the head"
    assert last_status(ghserver)["state"] == "failure"
    assert not ghserver.calls("POST", rf"/repos/{REPO}/statuses/{old_head}")


def test_approve_then_request_changes_then_approve_counts(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    pull.add_review("alice", "CHANGES_REQUESTED")
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["approvals_counted"] == ["alice"]
    superseded = [i for i in decision["ignored"] if "superseded" in i["reason"]]
    assert [i["state"] for i in superseded] == ["APPROVED", "CHANGES_REQUESTED"]


def test_request_changes_then_comment_only_still_blocks(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    pull.add_review("bob", "CHANGES_REQUESTED")
    pull.add_review("bob", "COMMENTED", body="ok now?")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["missing"] == [
        "fraud-detector (risk: medium) is blocked: changes requested by @bob"
    ]


def test_dismissed_approval_does_not_count(ghserver, capsys):
    pull = model_change(ghserver)
    review = pull.add_review("alice", "APPROVED")
    pull.dismiss(review)
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["ignored"][0]["reason"] == "was dismissed"


def test_dismissed_request_for_changes_unblocks(ghserver, capsys):
    pull = model_change(ghserver)
    review = pull.add_review("bob", "CHANGES_REQUESTED")
    pull.dismiss(review)
    pull.add_review("alice", "APPROVED")
    code, _ = run_gate(capsys)
    assert code == 0


def test_bot_approval_does_not_count(ghserver, capsys):
    pull = model_change(ghserver, risk="low")
    pull.add_review("renovate[bot]", "APPROVED", user_type="Bot")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["ignored"][0]["reason"] == "is a bot"


def test_a_bots_request_for_changes_blocks_whatever_its_repository_permission(ghserver, capsys):
    """docs/governance.md: a bot's request for changes blocks too (failing closed). An app is no
    collaborator: its permission reads `none`, so the write-access rule set the request aside
    and the pull request passed on one approval (it fired: exit 0). Nor is it asked."""
    pull = model_change(ghserver, risk="low")
    pull.add_review("scanner[bot]", "CHANGES_REQUESTED", user_type="Bot", association="NONE")
    ghserver.repos[REPO].permissions.pop("scanner[bot]")
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1, decision
    assert decision["missing"] == [
        "fraud-detector (risk: low) is blocked: changes requested by @scanner[bot]"
    ]
    assert ghserver.calls("GET", rf"/repos/{REPO}/collaborators/scanner.*") == []


def test_approval_from_someone_without_write_access_does_not_count(ghserver, capsys):
    pull = model_change(ghserver, risk="low")
    pull.add_review("drive-by", "APPROVED", association="CONTRIBUTOR")
    code, decision = run_gate(capsys)
    assert code == 1
    assert "no write access" in decision["ignored"][0]["reason"]


def test_low_risk_takes_one_approval_from_anyone_with_write_access(ghserver, capsys):
    pull = model_change(ghserver, risk="low")
    pull.add_review("zed", "APPROVED", association="COLLABORATOR")
    code, _ = run_gate(capsys)
    assert code == 0


# --- owners and teams -------------------------------------------------------------------------


def test_non_owner_approval_does_not_count_when_the_policy_demands_owners(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("mallory", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["ignored"] == [
        {
            "login": "mallory",
            "review_id": decision["ignored"][0]["review_id"],
            "state": "APPROVED",
            "reason": "is not an owner of fraud-detector",
            "model": "fraud-detector",
        }
    ]


def test_member_of_an_owner_team_counts_and_a_non_member_does_not(ghserver, capsys):
    pull = model_change(ghserver, risk="high", owners=("@acme/risk-ml",))
    ghserver.add_team_member("@acme/risk-ml", "dave")
    pull.add_review("dave", "APPROVED")
    pull.add_review("eve", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    [outcome] = decision["models"]
    assert outcome["approvers"] == ["dave"]
    assert outcome["missing"] == [
        "fraud-detector (risk: high) needs 1 more approval from its owners (@acme/risk-ml)"
    ]
    asked = {c.path for c in ghserver.calls("GET", r"/orgs/.*")}
    assert asked == {
        "/orgs/acme/teams/risk-ml/memberships/dave",
        "/orgs/acme/teams/risk-ml/memberships/eve",
    }
    ghserver.add_team_member("@acme/risk-ml", "eve")
    code, _ = run_gate(capsys)
    assert code == 0


def test_pending_team_invitation_is_not_membership(ghserver, capsys):
    pull = model_change(ghserver, owners=("@acme/risk-ml",))
    ghserver.add_team_member("@acme/risk-ml", "dave", state="pending")
    pull.add_review("dave", "APPROVED")
    code, _ = run_gate(capsys)
    assert code == 1


def test_required_team_is_named_until_one_of_its_members_approves(ghserver, capsys):
    policy = policy_yaml(
        "  high:\n    approvals: 1\n    from_owners: true\n"
        "    required_teams: ['@acme/ml-governance']\n"
    )
    text = manifest("fraud-detector", "high", ("@alice",))
    pull = open_pull(
        ghserver,
        {".mlops/policy.yaml": policy, "m/model.yaml": text},
        {".mlops/policy.yaml": policy, "m/model.yaml": version_bump(text)},
    )
    ghserver.add_team_member("@acme/ml-governance", "gina")
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["missing"] == [
        "fraud-detector (risk: high) needs 1 more approval from @acme/ml-governance"
    ]
    pull.add_review("gina", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["models"][0]["approvers"] == ["alice", "gina"]


def test_team_membership_that_cannot_be_read_fails_closed(ghserver, capsys):
    pull = model_change(ghserver, owners=("@acme/risk-ml",))
    pull.add_review("dave", "APPROVED")
    ghserver.fail(
        r"/orgs/acme/teams/risk-ml/memberships/dave",
        403,
        times=None,
        body={"message": "Resource not accessible by integration"},
    )
    code, decision = run_gate(capsys)
    assert code == 2
    assert decision == {}
    status = last_status(ghserver)
    assert status["state"] == "failure"
    assert status["description"].startswith("Gate error: GitHub API: checking whether @dave")
    assert len(status["description"]) <= 140


def test_separate_teams_token_is_used_for_membership(ghserver, capsys, monkeypatch):
    ghserver.teams_token = "org-reader"
    pull = model_change(ghserver, owners=("@acme/risk-ml",))
    ghserver.add_team_member("@acme/risk-ml", "dave")
    pull.add_review("dave", "APPROVED")
    assert run_gate(capsys)[0] == 2  # the workflow token cannot read teams
    monkeypatch.setenv("MLOPS_CI_TEAMS_TOKEN", "org-reader")
    assert run_gate(capsys)[0] == 0
    [membership] = ghserver.calls("GET", r"/orgs/.*")[-1:]
    assert membership.headers["Authorization"] == "token org-reader"
    [status] = ghserver.calls("POST", r".*/statuses/.*")[-1:]
    assert status.headers["Authorization"] == "token test-token"


def test_owners_added_by_the_pull_request_cannot_approve_it(ghserver, capsys):
    before = manifest("fraud-detector", "medium", ("@alice",))
    after = version_bump(manifest("fraud-detector", "medium", ("@alice", "@mallory")))
    pull = open_pull(ghserver, {"m/model.yaml": before}, {"m/model.yaml": after})
    pull.add_review("mallory", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["ignored"][0]["reason"] == "is not an owner of fraud-detector"


def test_a_new_model_takes_its_owners_from_head(ghserver, capsys):
    pull = open_pull(ghserver, {}, {"new/model.yaml": manifest("churn", "medium", ("@alice",))})
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["models"][0]["name"] == "churn"


def test_changes_requested_by_a_non_owner_does_not_block_when_policy_says_owners(ghserver, capsys):
    policy = policy_yaml(
        "  medium:\n    approvals: 1\n    from_owners: true\n    changes_requested_blocks: owners\n"
    )
    text = manifest("fraud-detector")
    pull = open_pull(
        ghserver,
        {".mlops/policy.yaml": policy, "m/model.yaml": text},
        {".mlops/policy.yaml": policy, "m/model.yaml": version_bump(text)},
    )
    pull.add_review("alice", "APPROVED")
    pull.add_review("bob", "CHANGES_REQUESTED")
    assert run_gate(capsys)[0] == 0
    pull.add_review("alice", "CHANGES_REQUESTED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert "changes requested by @alice" in decision["missing"][-1]


# --- tiers: base, head, renames, deletions, the policy itself ----------------------------------


def test_two_models_of_different_tiers_each_need_their_own_rule(ghserver, capsys):
    low = manifest("recommender", "low", ("@bob",))
    high = manifest("fraud-detector", "high", ("@alice", "@dave"))
    pull = open_pull(
        ghserver,
        {"a/model.yaml": low, "b/model.yaml": high},
        {"a/model.yaml": version_bump(low), "b/model.yaml": version_bump(high)},
    )
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    verdicts = {m["name"]: (m["tier"], m["approved"]) for m in decision["models"]}
    assert verdicts == {"recommender": ("low", True), "fraud-detector": ("high", False)}
    assert decision["missing"] == [
        "fraud-detector (risk: high) needs 1 more approval from its owners (@alice, @dave)"
    ]
    pull.add_review("dave", "APPROVED")
    assert run_gate(capsys)[0] == 0
    assert last_status(ghserver)["description"] == "Approved: 2 models"


def test_lowering_risk_from_high_to_low_keeps_the_high_bar(ghserver, capsys):
    before = manifest("fraud-detector", "high", ("@alice", "@dave"))
    after = version_bump(before).replace("risk: high", "risk: low")
    pull = open_pull(ghserver, {"m/model.yaml": before}, {"m/model.yaml": after})
    pull.add_review("zed", "APPROVED")  # would satisfy low: one approval from anyone
    code, decision = run_gate(capsys)
    assert code == 1
    [outcome] = decision["models"]
    assert outcome["tier"] == "high"
    assert "the stricter, high, applies" in outcome["notes"][0]


def test_raising_risk_applies_the_new_higher_tier(ghserver, capsys):
    before = manifest("fraud-detector", "low", ("@alice", "@dave"))
    after = version_bump(before).replace("risk: low", "risk: high")
    pull = open_pull(ghserver, {"m/model.yaml": before}, {"m/model.yaml": after})
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["models"][0]["tier"] == "high"


def test_editing_the_policy_to_zero_approvals_is_judged_by_the_base_policy(ghserver, capsys):
    strict = policy_yaml("  low:\n    approvals: 1\n  high:\n    approvals: 2\n")
    lax = policy_yaml(
        "  low:\n    approvals: 0\n  medium:\n    approvals: 0\n  high:\n    approvals: 0\n"
    )
    low = manifest("recommender", "low")
    pull = open_pull(
        ghserver,
        {".mlops/policy.yaml": strict, "a/model.yaml": low},
        {".mlops/policy.yaml": lax, "a/model.yaml": version_bump(low)},
    )
    code, decision = run_gate(capsys)
    assert code == 1
    by_name = {m["name"]: m for m in decision["models"]}
    assert by_name["recommender"]["missing"] == ["recommender (risk: low) needs 1 more approval"]
    policy_outcome = by_name["the approval policy"]
    assert policy_outcome["tier"] == "high"
    assert policy_outcome["rule"]["approvals"] == 2
    # The policy was read only at the base commit.
    policy_reads = ghserver.calls("GET", rf"/repos/{REPO}/contents/\.mlops/policy\.yaml")
    assert [r.query["ref"] for r in policy_reads] == [[pull.base_sha]]


def test_policy_owners_must_approve_a_policy_change(ghserver, capsys):
    base = policy_yaml(
        "  high:\n    approvals: 1\n    from_owners: true\n",
        owners="owners: ['@acme/ml-governance']\n",
    )
    pull = open_pull(
        ghserver, {".mlops/policy.yaml": base}, {".mlops/policy.yaml": base + "# tweak\n"}
    )
    ghserver.add_team_member("@acme/ml-governance", "gina")
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["missing"] == [
        "the approval policy .mlops/policy.yaml (needs the high tier) needs 1 more approval "
        "from its owners (@acme/ml-governance)"
    ]
    pull.add_review("gina", "APPROVED")
    assert run_gate(capsys)[0] == 0


def test_deleting_a_high_risk_model_needs_its_high_tier(ghserver, capsys):
    text = manifest("fraud-detector", "high", ("@alice", "@dave"))
    pull = open_pull(ghserver, {"m/model.yaml": text, "m/model.onnx": "bytes"}, {})
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    [outcome] = decision["models"]
    assert (outcome["name"], outcome["tier"]) == ("fraud-detector", "high")
    assert "deleted by this pull request" in outcome["notes"][0]
    pull.add_review("dave", "APPROVED")
    assert run_gate(capsys)[0] == 0


def test_renamed_manifest_keeps_the_old_paths_base_tier(ghserver, capsys):
    before = manifest("fraud-detector", "high", ("@alice", "@dave"))
    after = before.replace("risk: high", "risk: low")
    repo = ghserver.add_repo(REPO)
    pull = repo.add_pull(
        7,
        author="carol",
        base_files={"old/model.yaml": before},
        head_files={"new/model.yaml": after},
        files=[("new/model.yaml", "renamed", "old/model.yaml")],
    )
    pull.add_review("zed", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    [outcome] = decision["models"]
    assert outcome["tier"] == "high"
    assert outcome["path"] == "new/model.yaml"


def test_a_manifest_renamed_onto_the_policy_is_still_its_models_removal(ghserver, capsys):
    # GitHub lists a similar-enough file as renamed: .mlops/policy.yaml from the high-risk
    # manifest. The policy's own entry is judged as the policy; its old path must still count
    # as the model's removal, else the owners of fraud-detector are never asked.
    text = manifest("fraud-detector", "high", ("@alice", "@dave"))
    rules = policy_yaml("  high: {approvals: 1, from_owners: true}\n")
    repo = ghserver.add_repo(REPO)
    pull = repo.add_pull(
        7,
        author="carol",
        base_files={"models/fraud/model.yaml": text, ".mlops/policy.yaml": rules},
        head_files={".mlops/policy.yaml": text},
        files=[(".mlops/policy.yaml", "renamed", "models/fraud/model.yaml")],
    )
    pull.add_review("zed", "APPROVED")  # counts for the policy, which names no owners
    code, decision = run_gate(capsys)
    assert code == 1
    fraud = next(m for m in decision["models"] if m["name"] == "fraud-detector")
    assert fraud["approved"] is False
    assert "deleted by this pull request" in fraud["notes"][0]
    pull.add_review("alice", "APPROVED")
    assert run_gate(capsys)[0] == 0


def test_changing_only_the_artifact_in_a_model_folder_is_governed(ghserver, capsys):
    text = manifest("fraud-detector", "high", ("@alice", "@dave"))
    pull = open_pull(
        ghserver,
        {"models/fraud/model.yaml": text, "models/fraud/model.onnx": "v1"},
        {"models/fraud/model.yaml": text, "models/fraud/model.onnx": "v2"},
    )
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    [outcome] = decision["models"]
    assert (outcome["name"], outcome["tier"]) == ("fraud-detector", "high")


def test_a_manifest_added_below_a_model_does_not_take_its_files_from_its_owners(ghserver, capsys):
    """fraud-detector (high risk, @alice's) keeps its artifact in sub/. A pull request that
    changes that artifact and adds sub/model.yaml, a low-risk model of its own with owners it
    names, made the file the new model's alone: the nearest manifest at head. At base the file
    is fraud-detector's, so fraud-detector's owners must approve its new bytes too."""
    text = manifest("fraud-detector", "high", ("@alice", "@dave")).replace(
        "path: model.onnx", "path: sub/model.onnx"
    )
    decoy = manifest("decoy", "low", ("@zed",))
    base = {"models/fraud/model.yaml": text, "models/fraud/sub/model.onnx": "v1"}
    head = {**base, "models/fraud/sub/model.onnx": "v2", "models/fraud/sub/model.yaml": decoy}
    pull = open_pull(ghserver, base, head)
    pull.add_review("zed", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1, decision
    assert [(m["name"], m["approved"]) for m in decision["models"]] == [
        ("fraud-detector", False),
        ("decoy", True),
    ]
    for owner in ("alice", "dave"):
        pull.add_review(owner, "APPROVED")
    assert run_gate(capsys)[0] == 0
    # and the other way: a model folder removed below another hands its files to that one
    pull = open_pull(ghserver, head, {**base, "models/fraud/sub/model.onnx": "v3"}, number=8)
    pull.add_review("zed", "APPROVED")
    code, decision = run_gate(capsys, number=8)
    assert code == 1, decision
    assert {m["name"]: m["approved"] for m in decision["models"]} == {
        "fraud-detector": False,
        "decoy": True,
    }


def test_invalid_manifest_at_head_is_treated_as_high_risk(ghserver, capsys):
    before = manifest("fraud-detector", "low", ("@alice",))
    pull = open_pull(
        ghserver,
        {"m/model.yaml": before},
        {"m/model.yaml": before.replace("risk: low", "risk: trivial")},
    )
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    [outcome] = decision["models"]
    assert outcome["tier"] == "high"
    assert any("cannot read the manifest at head" in n for n in outcome["notes"])


def test_a_policy_tightened_on_the_base_branch_after_the_pull_request_opened_applies(
    ghserver, capsys
):
    # GitHub's base.sha stays where main stood when the pull request was opened (or last
    # pushed to). The policy merged into main since then governs what this merge brings.
    lax, strict = policy_yaml("  low: {approvals: 1}\n"), policy_yaml("  low: {approvals: 2}\n")
    text = manifest("recommender", "low")
    pull = open_pull(
        ghserver,
        {".mlops/policy.yaml": lax, "a/model.yaml": text},
        {".mlops/policy.yaml": lax, "a/model.yaml": version_bump(text)},
    )
    pull.add_review("dave", "APPROVED")
    assert run_gate(capsys)[0] == 0
    repo = ghserver.repos[REPO]
    tip = fake_sha("main, after the pull request that tightened the policy")
    repo.set_files(tip, {".mlops/policy.yaml": strict, "a/model.yaml": text})
    repo.branches["main"] = tip
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["missing"] == ["recommender (risk: low) needs 1 more approval"]
    assert f"with the base branch at {tip[:12]}" in decision["reason"]
    assert last_status(ghserver)["state"] == "failure"
    pull.add_review("erin", "APPROVED")
    assert run_gate(capsys)[0] == 0


def test_a_base_branch_that_cannot_be_read_is_no_approval(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    ghserver.fail(rf"/repos/{REPO}/git/ref/heads/main", 404, times=None)
    code, _ = run_gate(capsys)
    assert code == 2
    assert "reading where the branch main points failed with 404" in capsys.readouterr().err
    assert last_status(ghserver)["state"] == "failure"


def test_invalid_policy_at_base_fails_closed_with_its_line(ghserver, capsys):
    bad = policy_yaml("  high:\n    approvals: two\n")
    text = manifest("recommender", "low")
    open_pull(
        ghserver,
        {".mlops/policy.yaml": bad, "a/model.yaml": text},
        {".mlops/policy.yaml": bad, "a/model.yaml": version_bump(text)},
    )
    code, _ = run_gate(capsys)
    err = capsys.readouterr().err
    assert code == 2
    assert ".mlops/policy.yaml:5: the approval policy at the base commit" in err
    assert "line 5" in err
    assert last_status(ghserver)["state"] == "failure"


# --- scale and failures -----------------------------------------------------------------------


def test_150_reviews_across_pages_are_all_read(ghserver, capsys):
    pull = model_change(ghserver)
    for i in range(149):
        pull.add_review(f"reviewer{i}", "COMMENTED")
    pull.add_review("alice", "APPROVED")  # review 150, on the second page
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["approvals_counted"] == ["alice"]
    pages = ghserver.calls("GET", rf"/repos/{REPO}/pulls/7/reviews")
    assert [r.query.get("page", ["1"])[0] for r in pages] == ["1", "2"]


def test_files_beyond_the_first_page_are_read(ghserver, capsys):
    text = manifest("fraud-detector")
    base = {f"docs/page{i}.md": "a" for i in range(120)} | {"zz/model.yaml": text}
    head = {f"docs/page{i}.md": "b" for i in range(120)} | {"zz/model.yaml": version_bump(text)}
    open_pull(ghserver, base, head)  # the manifest sorts last: file 121, page 2
    code, decision = run_gate(capsys)
    assert code == 1
    assert [m["name"] for m in decision["models"]] == ["fraud-detector"]


def test_server_error_then_success_is_retried(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    ghserver.fail(rf"/repos/{REPO}/pulls/7/reviews", 500, times=1)
    ghserver.fail(rf"/repos/{REPO}/pulls/7", 502, times=1)
    code, _ = run_gate(capsys)
    assert code == 0
    assert [r.status for r in ghserver.calls("GET", rf"/repos/{REPO}/pulls/7/reviews")] == [
        500,
        200,
    ]
    # read again after the lists, to know the head did not move meanwhile
    assert [r.status for r in ghserver.calls("GET", rf"/repos/{REPO}/pulls/7")] == [502, 200, 200]


def test_rate_limit_403_with_reset_header_is_waited_out(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    ghserver.rate_limit(rf"/repos/{REPO}/contents/.*", times=2, reset_in=1)
    code, _ = run_gate(capsys)
    assert code == 0
    codes = [r.status for r in ghserver.calls("GET", rf"/repos/{REPO}/contents/.*")]
    assert codes[:2] == [403, 403]
    assert 403 not in codes[2:]


def test_forbidden_403_without_rate_limit_is_not_retried_and_fails_closed(ghserver, capsys):
    model_change(ghserver)
    ghserver.fail(
        rf"/repos/{REPO}/pulls/7/files",
        403,
        times=None,
        body={"message": "Resource not accessible by integration"},
    )
    code, _ = run_gate(capsys)
    assert code == 2
    assert len(ghserver.calls("GET", rf"/repos/{REPO}/pulls/7/files")) == 1
    assert "403: Resource not accessible by integration" in capsys.readouterr().err


def test_permanent_server_error_fails_closed_with_exit_2(ghserver, capsys):
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    ghserver.fail(rf"/repos/{REPO}/pulls/7/reviews", 500, times=None)
    code, decision = run_gate(capsys)
    err = capsys.readouterr().err
    assert code == 2
    assert decision == {}
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert "failed with 500" in err
    status = last_status(ghserver)
    assert status["state"] == "failure"
    assert status["description"].startswith("Gate error:")
    retries = ghserver.calls("GET", rf"/repos/{REPO}/pulls/7/reviews")
    assert len(retries) == 6  # the first try and 5 retries


def test_bad_token_exits_2_with_one_line(ghserver, capsys, monkeypatch):
    model_change(ghserver)
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    code, _ = run_gate(capsys)
    err = capsys.readouterr().err
    assert code == 2
    assert "401: Bad credentials" in err
    assert statuses(ghserver) == []


def test_status_description_fits_githubs_140_characters(ghserver, capsys):
    base, head = {}, {}
    for i in range(5):
        text = manifest(
            f"a-model-with-a-rather-long-name-number-{i}",
            "high",
            ("@acme/a-team-with-a-long-name", "@someone-else"),
        )
        base[f"m{i}/model.yaml"] = text
        head[f"m{i}/model.yaml"] = version_bump(text)
    open_pull(ghserver, base, head)
    code, _ = run_gate(capsys)
    assert code == 1
    description = last_status(ghserver)["description"]
    assert len(description) <= 140
    assert description.endswith("(+4 more)") or description.endswith("…")


# --- runner integration -----------------------------------------------------------------------


def test_summary_and_output_are_written_on_a_runner(ghserver, capsys, monkeypatch, tmp_path):
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    model_change(ghserver, risk="high", owners=("@alice", "@dave")).add_review("alice", "APPROVED")
    code = cli.main(["gate", "--pr", "7", "--repo", REPO])
    text = capsys.readouterr().out
    assert code == 1
    assert "NOT APPROVED" in text
    assert "needs 1 more approval from its owners (@alice, @dave)" in text
    md = summary.read_text()
    assert "Governance gate: not approved" in md
    assert "| ❌ | <code>fraud-detector</code> | high | @alice |" in md
    assert "approved<<" in output.read_text() and "\nfalse\n" in output.read_text()


def test_no_status_flag_decides_without_posting(ghserver, capsys):
    model_change(ghserver)
    code, _ = run_gate(capsys, "--no-status")
    assert code == 1
    assert ghserver.calls("POST") == []


def test_status_flips_to_success_when_the_last_approval_arrives(ghserver, capsys):
    pull = model_change(ghserver, risk="high", owners=("@alice", "@dave"))
    pull.add_review("alice", "APPROVED")
    assert run_gate(capsys)[0] == 1
    pull.add_review("dave", "APPROVED")
    assert run_gate(capsys)[0] == 0
    assert [s["state"] for s in statuses(ghserver)] == ["pending", "failure", "pending", "success"]


def test_an_internal_error_still_fails_closed(ghserver, capsys, monkeypatch):
    from mlops_ci import policy

    model_change(ghserver).add_review("alice", "APPROVED")

    def broken(*args, **kwargs):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(policy, "decide", broken)
    code, _ = run_gate(capsys)
    assert code == 2
    assert "internal error: ZeroDivisionError" in capsys.readouterr().err
    assert last_status(ghserver)["state"] == "failure"
    assert last_status(ghserver)["description"] == "Gate error: internal error: ZeroDivisionError"


def test_gate_without_a_pull_request_number_is_a_usage_error(ghserver, capsys):
    code = cli.main(["gate", "--repo", REPO])
    assert code == 2
    assert "pass --pr N" in capsys.readouterr().err


def test_gate_reads_only_through_the_api_and_runs_nothing(ghserver, capsys, tmp_path, monkeypatch):
    # The working directory holds a broken checkout: the gate must not even look at it.
    (tmp_path / ".mlops").mkdir()
    (tmp_path / ".mlops" / "policy.yaml").write_text("not: [valid")
    monkeypatch.chdir(tmp_path)
    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["policy"] == "built-in default"


def test_many_approvers_from_one_team_list_the_team_once(ghserver, capsys):
    pull = model_change(ghserver, risk="high", owners=("@acme/risk-ml",))
    for who in ("dave", "erin", "finn", "gus"):
        pull.add_review(who, "APPROVED")
    ghserver.add_team_member("@acme/risk-ml", "dave")
    ghserver.add_team_member("@acme/risk-ml", "erin")
    ghserver.add_team_member("@acme/risk-ml", "finn", state="pending")
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["models"][0]["approvers"] == ["dave", "erin"]
    assert [c.path for c in ghserver.calls("GET", r"/orgs/.*")] == [
        "/orgs/acme/teams/risk-ml/members"
    ]


def test_a_fix_of_an_invalid_policy_is_judged_by_the_default_high_tier(ghserver, capsys):
    bad = policy_yaml("  high:\n    approvals: two\n")
    good = policy_yaml("  high:\n    approvals: 2\n")
    pull = open_pull(ghserver, {".mlops/policy.yaml": bad}, {".mlops/policy.yaml": good})
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["policy"].startswith("built-in default (the policy at base is invalid: line 5")
    assert decision["missing"] == [
        "the approval policy .mlops/policy.yaml (needs the high tier) needs 1 more approval"
    ]
    pull.add_review("bob", "APPROVED")
    assert run_gate(capsys)[0] == 0


# --- no blind spots (issue 8) ---------------------------------------------------------------------


def test_pull_request_of_3002_files_with_the_model_last_is_governed(ghserver, capsys):
    from mlops_ci import github, policy

    text = manifest("fraud-detector", "high")
    base = {f"docs/page-{i:04}.md": "a" for i in range(3001)}
    base["zz/fraud/model.yaml"] = text
    head = dict.fromkeys(base, "b")
    head["zz/fraud/model.yaml"] = version_bump(text)
    pull = open_pull(ghserver, base, head)
    assert [f["filename"] for f in pull.files][-1] == "zz/fraud/model.yaml"
    # armed: GitHub's files list stops at 3,000, so a gate that trusts it sees no model at all
    gh = github.GitHub.from_env(REPO)
    listed = gh.pull_files(7)
    assert len(listed) == 3000 and "zz/fraud/model.yaml" not in {f.filename for f in listed}
    pr = gh.pull_request(7)
    from mlops_ci import gate

    naive = policy.decide(policy.DEFAULT_POLICY, gate.collect_facts(gh, pr, listed), [], {})
    assert naive.approved and not naive.outcomes
    # mlops-ci reads the trees instead and governs the model
    code, decision = run_gate(capsys)
    assert code == 1
    assert [m["name"] for m in decision["models"]] == ["fraud-detector"]
    assert decision["models"][0]["tier"] == "high"
    assert last_status(ghserver)["state"] == "failure"
    trees = ghserver.calls("GET", rf"/repos/{REPO}/git/trees/.*")
    assert 0 < len(trees) <= 8  # only the folders that differ are read


def test_a_model_folder_moved_past_3000_files_is_the_rename_the_files_list_shows(ghserver, capsys):
    """Past the files list's cap the git trees say what changed: a folder moved with its bytes
    is judged as the rename GitHub's list shows (one model, its tier at the old path), not as
    one model removed and another added."""
    text = manifest("fraud-detector", "high", ("@alice", "@dave"))
    base = {f"docs/page-{i:04}.md": "a" for i in range(3001)}
    head = dict.fromkeys(base, "b")
    base |= {"old/model.yaml": text, "old/model.onnx": "w"}
    head |= {"new/model.yaml": text, "new/model.onnx": "w"}
    pull = open_pull(ghserver, base, head)
    for owner in ("alice", "dave"):
        pull.add_review(owner, "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 0, decision
    [model] = decision["models"]
    assert (model["name"], model["path"], model["tier"]) == (
        "fraud-detector",
        "new/model.yaml",
        "high",
    )
    assert model["notes"] == ["renamed from old/model.yaml: its tier at base still applies"]


def test_tree_diff_is_counted_from_the_merge_base(ghserver, capsys):
    text = manifest("fraud-detector")
    base = {f"docs/page-{i:04}.md": "a" for i in range(3001)}
    base["zz/fraud/model.yaml"] = text
    head = {p: "b" for p in base if p.startswith("docs/")}
    head["zz/fraud/model.yaml"] = text  # the model is untouched by the pull request ...
    pull = open_pull(ghserver, base, head)
    repo = ghserver.repos[REPO]
    # ... but the base branch moved on (a newer model.yaml) after the branch point
    moved = fake_sha("base-moved")
    repo.set_files(moved, {**base, "zz/fraud/model.yaml": version_bump(text)})
    pull.base_sha = moved
    repo.merge_bases[(moved, pull.head_sha)] = fake_sha(f"{REPO}#7:base")
    code, decision = run_gate(capsys)
    assert code == 0, decision
    assert decision["models"] == []


def test_reviewer_with_write_permission_counts_whatever_author_association_says(ghserver, capsys):
    from mlops_ci import github, policy

    pull = model_change(ghserver, risk="low")
    # an org member whose membership is private reads as CONTRIBUTOR to a repository token
    pull.add_review("bob", "APPROVED", association="CONTRIBUTOR")
    ghserver.repos[REPO].permissions["bob"] = "write"
    gh = github.GitHub.from_env(REPO)
    # armed: judged by author_association, the real team member can never approve
    from mlops_ci import gate

    facts = gate.collect_facts(gh, gh.pull_request(7), gh.pull_files(7))
    naive = policy.decide(policy.DEFAULT_POLICY, facts, gh.reviews(7), {})
    assert not naive.approved
    assert "author_association CONTRIBUTOR" in naive.ignored[0].reason
    code, decision = run_gate(capsys)
    assert code == 0
    assert decision["approvals_counted"] == ["bob"]
    asked = ghserver.calls("GET", rf"/repos/{REPO}/collaborators/bob/permission")
    assert len(asked) == 1


@pytest.mark.parametrize(
    ("role", "counts"), [("maintain", True), ("admin", True), ("triage", False), ("read", False)]
)
def test_only_write_maintain_or_admin_may_approve(ghserver, capsys, role, counts):
    pull = model_change(ghserver, risk="low")
    pull.add_review("bob", "APPROVED", association="MEMBER")
    ghserver.repos[REPO].permissions["bob"] = role
    code, decision = run_gate(capsys)
    assert (code == 0) is counts
    if not counts:
        assert "repository permission: read" in json.dumps(decision["ignored"])


def test_permission_is_asked_once_per_reviewer_per_run(ghserver, capsys):
    pull = model_change(ghserver, risk="low")
    for state in ("CHANGES_REQUESTED", "APPROVED", "COMMENTED", "APPROVED"):
        pull.add_review("bob", state)
    pull.add_review("erin", "COMMENTED")
    code, _ = run_gate(capsys)
    assert code == 0
    assert len(ghserver.calls("GET", rf"/repos/{REPO}/collaborators/bob/permission")) == 1
    assert ghserver.calls("GET", rf"/repos/{REPO}/collaborators/erin/permission") == []


@pytest.mark.slow
def test_status_write_that_keeps_failing_exits_2_within_20_seconds(ghserver, capsys, monkeypatch):
    import time

    pull = model_change(ghserver)
    pull.add_review("alice", "APPROVED")
    monkeypatch.delenv("MLOPS_CI_GITHUB_MAX_WAIT")  # the real waits, not the tests' short ones
    ghserver.fail(rf"/repos/{REPO}/statuses/.*", 502, times=None)
    started = time.monotonic()
    code, _ = run_gate(capsys)
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2
    assert elapsed < 20, elapsed
    assert "could not set the commit status mlops-ci/governance" in err
    # one round of retries: the failing status is not retried a second time
    assert len(ghserver.calls("POST", rf"/repos/{REPO}/statuses/.*")) == 6


def test_truncated_tree_fails_closed_saying_why(ghserver, capsys):
    text = manifest("fraud-detector")
    base = {f"docs/page-{i:04}.md": "a" for i in range(3001)}
    base["zz/fraud/model.yaml"] = text
    open_pull(ghserver, base, dict.fromkeys(base, "b"))
    truncated = {"sha": "0" * 40, "url": "", "tree": [], "truncated": True}
    ghserver.fail(rf"/repos/{REPO}/git/trees/.*", 200, times=None, body=truncated)
    code, decision = run_gate(capsys)
    err = capsys.readouterr().err
    assert code == 2 and decision == {}
    assert "truncated the git tree" in err and "fails closed" in err
    assert last_status(ghserver)["state"] == "failure"


def _same_head_into_evil(server: GitHubServer) -> tuple[Pull, Pull]:
    """Head H changes a high-risk model and makes the policy lax (no approvals). Pull request #7
    takes H into main, whose policy (the built-in defaults) wants approvals; the author then
    opens #8 of the same head into `evil`, a branch they cut where the lax policy already is."""
    lax = policy_yaml("  high:\n    approvals: 0\n")
    text = manifest("fraud-detector", "high")
    head = {".mlops/policy.yaml": lax, "models/fraud/model.yaml": version_bump(text)}
    into_main = open_pull(server, {"models/fraud/model.yaml": text}, head)
    evil = {".mlops/policy.yaml": lax, "models/fraud/model.yaml": text}
    into_evil = server.repos[REPO].add_pull(
        8, author="carol", base_files=evil, head_files=head, head_sha=into_main.head_sha
    )
    into_evil.base_ref = "evil"
    return into_main, into_evil


def latest_per_context(server: GitHubServer, sha: str) -> dict[str, str]:
    """What GitHub shows on every pull request of head `sha`: the latest state per context,
    contexts compared case-insensitively as GitHub does."""
    latest: dict[str, str] = {}
    for s in server.repos[REPO].statuses:
        if s["sha"] == sha:
            latest[s["context"].lower()] = s["state"]
    return latest


def test_a_pull_request_into_another_branch_is_judged_under_its_context(ghserver, capsys):
    """A commit status belongs to the head commit, not to one pull request. A pull request of
    the same head into a branch its author controls (where the policy and the manifests say
    what they like) is judged by that branch's policy, and its `success` lands on
    `mlops-ci/governance (evil)`, which no rule of the default branch reads."""
    into_main, _ = _same_head_into_evil(ghserver)
    code, decision = run_gate(capsys)
    assert code == 1 and decision["context"] == CONTEXT
    code, decision = run_gate(capsys, number=8)
    assert code == 0, decision
    assert decision["approved"] is True and decision["context"] == f"{CONTEXT} (evil)"
    assert decision["base"] == "evil"
    latest = latest_per_context(ghserver, into_main.head_sha)
    assert latest[CONTEXT] == "failure"  # what main's branch protection requires
    assert latest[f"{CONTEXT} (evil)"] == "success"
    # main's context was written by the pull request into main alone (pending, then failure)
    assert [s["state"] for s in statuses(ghserver)] == ["pending", "failure"]
    # and the text output says which status it is
    assert cli.main(["gate", "--pr", "8", "--repo", REPO, "--no-status"]) == 0
    assert "into evil: status mlops-ci/governance (evil) (not posted" in capsys.readouterr().out


def test_one_context_for_every_base_lets_the_attacker_s_branch_approve_main(
    ghserver, capsys, monkeypatch
):
    """The attack the per-base context closes, shown firing: with one context for every base
    (and a decision on any base), the success earned against `evil` is the latest
    `mlops-ci/governance` on the head, so main's pull request shows approved."""
    from mlops_ci import status_context

    monkeypatch.setattr(status_context, "for_base", lambda name, base, default: name)
    into_main, _ = _same_head_into_evil(ghserver)
    assert run_gate(capsys)[0] == 1
    assert run_gate(capsys, number=8)[0] == 0
    assert latest_per_context(ghserver, into_main.head_sha)[CONTEXT] == "success"


def test_a_pull_request_moved_to_the_default_branch_is_judged_there(ghserver, capsys):
    """An `edited` event with `changes.base`: approved against `evil`, moved to main, the gate
    judges main's context with main's policy; the old success stays under evil's name."""
    into_main, into_evil = _same_head_into_evil(ghserver)
    del ghserver.repos[REPO].pulls[7]
    assert run_gate(capsys, number=8)[0] == 0
    into_evil.base_ref, into_evil.base_sha = "main", into_main.base_sha
    code, decision = run_gate(capsys, number=8)
    assert code == 1 and decision["context"] == CONTEXT
    latest = latest_per_context(ghserver, into_evil.head_sha)
    assert latest == {CONTEXT: "failure", f"{CONTEXT} (evil)": "success"}


def test_a_base_changed_while_the_gate_runs_leaves_no_decision(ghserver, capsys, monkeypatch):
    """Files listed after the pull request moved to `evil` describe it against evil: a decision
    on them must not land on main's context."""
    from mlops_ci import github

    into_main, _ = _same_head_into_evil(ghserver)
    real = github.GitHub.pull_files

    def racing(self, number):
        if into_main.base_ref == "main":  # moved to evil, where nothing but README differs
            into_main.base_ref = "evil"
            into_main.files.clear()
            into_main.add_file("README.md", "modified")
        return real(self, number)

    monkeypatch.setattr(github.GitHub, "pull_files", racing)
    code, _ = run_gate(capsys)
    assert code == 2
    assert [s["state"] for s in statuses(ghserver)] == ["pending", "failure"]
    assert "moved from the base branch main to evil" in last_status(ghserver)["description"]


def test_a_pull_request_into_an_unnamed_base_is_never_approved(ghserver, capsys):
    open_pull(ghserver, {"README.md": "a"}, {"README.md": "b"}).base_ref = ""
    code, decision = run_gate(capsys)
    assert code == 1 and decision["approved"] is False
    assert "a branch the API did not name" in decision["reason"]
    assert last_status(ghserver)["state"] == "failure"  # on main's context: it grants nothing


def test_deploy_refuses_a_merge_into_another_branch_pushed_to_the_default_one(ghserver):
    """The merge commit of a pull request into a branch its author controls, then pushed to
    the default branch: re-verification on deploy judges that pull request only as one into the
    default branch, so the other branch's lax policy approves nothing."""
    from mlops_ci import gate
    from mlops_ci.github import GitHub
    from mlops_ci.reverify import judge

    lax = policy_yaml("  high:\n    approvals: 0\n")
    text = manifest("fraud-detector", "high")
    base = {".mlops/policy.yaml": lax, "models/fraud/model.yaml": text}
    base["models/fraud/model.onnx"] = "onnx bytes"
    head = {**base, "models/fraud/model.yaml": version_bump(text)}
    pull = open_pull(ghserver, base, head)
    pull.base_ref = "evil"
    pull.merge()
    gh = GitHub.from_env(REPO)
    # the gate's own run approves it, under evil's context ...
    assert gate.evaluate(gh, gh.pull_request(7), any_base=True).approved
    # ... but what deploy judges a merged pull request with (`reverify.judge`, which calls
    # `gate.evaluate` without `any_base`) approves only pull requests into the default branch
    judged = judge(gh, {"number": 7, "merged_at": pull.merged_at})
    assert judged.decision.approved is False
    assert "only pull requests into the default branch (main)" in judged.decision.reason


def test_a_co_author_past_the_250_commits_github_lists_fails_closed(ghserver, capsys):
    """GitHub lists at most 250 commits of a pull request; whoever pushed the 251st is still a
    co-author, so a list that falls short of the pull request's `commits` is not seen whole."""
    pull = model_change(ghserver)
    for _ in range(250):
        pull.add_commit("carol")
    pull.add_commit("alice")  # the 252nd commit: past the list
    pull.add_review("alice", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 2
    assert decision == {}
    status = last_status(ghserver)
    assert status["state"] == "failure"
    assert "252 commits but GitHub lists 250" in status["description"]
    assert "252 commits but GitHub lists 250" in capsys.readouterr().err


def test_owners_unreadable_at_base_are_not_replaced_by_the_pull_requests(ghserver, capsys):
    """An owner written `"@alice\\n"` (which validate let through before owners were fully
    matched) reads as no owners at base; the pull request may not appoint its approvers."""
    base = manifest("fraud-detector", "high", ("@alice\\n",))
    head = version_bump(manifest("fraud-detector", "high", ("@dave", "@erin")))
    pull = open_pull(ghserver, {"models/fraud/model.yaml": base}, {"models/fraud/model.yaml": head})
    pull.add_review("dave", "APPROVED")
    pull.add_review("erin", "APPROVED")
    code, decision = run_gate(capsys)
    assert code == 1
    assert decision["approvals_counted"] == []
    assert "from its owners (none could be read)" in decision["missing"][0]
    assert last_status(ghserver)["state"] == "failure"


def test_a_push_while_the_gate_runs_leaves_no_decision_on_the_old_head(
    ghserver, capsys, monkeypatch
):
    """The files list describes the pull request as it is when listed: after a push that
    reverts the model's change (and a force-push back), a decision on the README alone would
    have stood as `success` on the head that changes the model."""
    from mlops_ci import github

    pull = model_change(ghserver)  # changes fraud-detector; nobody approved
    old = pull.head_sha
    real = github.GitHub.pull_files

    def racing(self, number):
        if pull.head_sha == old:
            pull.push()  # the author's next push touches the README only
            pull.files.clear()
            pull.add_file("README.md", "modified")
        return real(self, number)

    monkeypatch.setattr(github.GitHub, "pull_files", racing)
    code, _ = run_gate(capsys)
    assert code == 2
    on_old = [s for s in statuses(ghserver) if s["sha"] == old]
    assert on_old and all(s["state"] != "success" for s in on_old)
    assert "moved from" in on_old[-1]["description"]
