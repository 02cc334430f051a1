"""The adoption baseline: `.mlops/policy.yaml`'s `deploy.reviewed_at` names a commit whose files
count as reviewed, so that a repository whose models were committed before mlops-ci (an initial
commit, direct pushes) can deploy its first version bump without rewriting every artifact.

The line counts only when an approved pull request set it (the gate's high tier, as for any
policy change), its diff changing that very line, and only for a commit the default branch's
first-parent history held before that pull request. Each way around it is shown to launder
unreviewed bytes first, with its guard taken out: a direct push or an admin merge that writes
the line, an approved pull request that edits another part of a policy such a change wrote, and
an approved line that names a commit the branch did not hold at the pull request's base.

Real git repositories in tmp_path, tests/ghserver.py as GitHub, a folder registry, the real iris
model (the `Main` of tests/test_deploy_range.py: iris, wine and rose committed with no pull
request).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from deploy_models import git, tree, write_model
from test_deploy_range import Main, _serving, bump, new_main
from test_deploy_reviewed import _refusals, manifest_version

from mlops_ci import cli, deploy_range, policy, reverify

POLICY = ".mlops/policy.yaml"


@pytest.fixture
def main(ghserver, monkeypatch, tmp_path: Path) -> Main:
    repo = new_main(ghserver, monkeypatch, tmp_path)
    repo.gh.permissions["dave"] = "write"
    return repo


def policy_text(reviewed_at: str | None, *, tier: str = "low") -> str:
    """A policy whose line 6 names `reviewed_at`; `tier` picks the one tier it spells out."""
    line = f'deploy:\n  reviewed_at: "{reviewed_at}"\n' if reviewed_at else ""
    return f"apiVersion: mlops-ci/v1\nkind: Policy\ntiers:\n  {tier}: {{approvals: 1}}\n{line}"


def set_policy(reviewed_at: str | None, *, tier: str = "low") -> Callable[[Path], object]:
    def change(repo: Path) -> None:
        (repo / ".mlops").mkdir(exist_ok=True)
        (repo / POLICY).write_text(policy_text(reviewed_at, tier=tier))

    return change


def merge_reviewed(
    main: Main, number: int, change: Callable[[Path], object], approvers=("bob", "dave")
) -> str:
    """Main.merge with two approvals: a change to the policy needs the high tier (the built-in
    default: 2 approvals, from anyone with write access while the policy names no owners)."""
    return main.merge(number, change, approvers=approvers)


def _first(main: Main) -> str:
    return git(main.repo, "rev-list", "--max-parents=0", "HEAD")


# --- how a team adopts mlops-ci ---------------------------------------------------------------


def test_a_first_deploy_s_refusal_prints_the_line_that_adopts_the_history(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A new user: models committed with no pull request, mlops-ci installed, the first version
    bump merged. Refused (rose's model.skops was never reviewed), and the refusal prints the
    exact policy line; merged in a pull request of its own, the next bump deploys."""
    registry = tmp_path / "registry"
    start = main.head
    first = main.merge(1, manifest_version("rose", "1.0.1"))
    assert main.deploy(registry, start, first) == 1
    reason = _refusals(registry)[-1]
    assert reason.startswith(f"models/rose/model.skops at {first[:12]}: no approved pull request")
    line = f'deploy: {{reviewed_at: "{start}"}}'
    assert reason.endswith(line), reason
    assert "a policy change needs the high tier" in reason
    # the line, as printed, is a valid policy
    adopted = f"apiVersion: mlops-ci/v1\nkind: Policy\ntiers: {{}}\n{line}\n"
    parsed, problems = policy.parse_policy(adopted)
    assert problems == [] and parsed is not None and parsed.reviewed_at is not None
    assert (parsed.reviewed_at.commit, parsed.reviewed_at.line) == (start, 4)

    second = merge_reviewed(main, 2, set_policy(start))
    assert main.deploy(registry, first, second) == 0  # no model changed
    third = main.merge(3, manifest_version("rose", "1.0.2"))
    assert main.deploy(registry, second, third) == 0, capsys.readouterr()
    assert _serving(registry)["rose"] == ("1.0.2", 3)


def test_the_baseline_can_come_with_the_first_version_bump(main: Main, tmp_path: Path) -> None:
    """One pull request both adopts the history and bumps the model (approved at the high
    tier, since it changes the policy): its diff vouches for the line, the line for the
    artifact."""
    registry = tmp_path / "registry"
    start = main.head

    def adopt_and_bump(repo: Path) -> None:
        set_policy(start)(repo)
        manifest_version("rose", "1.0.1")(repo)

    first = merge_reviewed(main, 1, adopt_and_bump)
    assert main.deploy(registry, start, first) == 0
    assert _serving(registry)["rose"] == ("1.0.1", 1)


def test_without_the_line_nothing_changes_and_no_line_is_suggested_after_a_first_deploy(
    main: Main, tmp_path: Path
) -> None:
    """The key absent: a model committed with no pull request stays refused; once a deploy is
    on record the refusal suggests no baseline (a file refused then came in after mlops-ci)."""
    registry = tmp_path / "registry"
    first = main.first_deployed(registry)
    second = main.merge(2, manifest_version("rose", "1.0.1"))
    assert main.deploy(registry, first, second) == 1
    reason = _refusals(registry)[-1]
    assert f"last changed by {_first(main)[:12]}, which no merged pull request produced" in reason
    assert "reviewed_at" not in reason


def test_a_file_changed_after_the_baseline_is_not_vouched_for_by_it(
    main: Main, tmp_path: Path
) -> None:
    """The baseline vouches for bytes, not for paths: rose's artifact pushed straight to main
    after the baseline's commit has other bytes there, and is refused, saying so."""
    registry = tmp_path / "registry"
    start = main.head
    first = merge_reviewed(main, 1, set_policy(start))
    assert main.deploy(registry, start, first) == 0
    pushed = main.push(bump("rose", "6.6.6"))
    assert main.deploy(registry, first, pushed) == 1
    third = main.merge(3, manifest_version("rose", "6.6.7"))
    assert main.deploy(registry, pushed, third) == 1
    reason = _refusals(registry)[-1]
    assert reason.startswith(f"models/rose/model.skops at {third[:12]}: no approved pull request")
    assert f"other bytes at the baseline {start[:12]} ({POLICY}:6, deploy.reviewed_at)" in reason
    assert "rose" not in _serving(registry)


# --- the attacks ------------------------------------------------------------------------------


def _pushed_then_baselined(main: Main, registry: Path, how: str) -> tuple[str, str]:
    """iris 1.1.0 deployed through #1; iris 6.6.6 pushed straight to main (refused, on the
    record); then `.mlops/policy.yaml` names that push as the baseline, written by a direct
    push or by an admin merge (#2, unapproved). Returns (the pushed commit, the line's)."""
    first = main.first_deployed(registry)
    pushed = main.push(bump("iris", "6.6.6"))
    assert main.deploy(registry, first, pushed) == 1
    if how == "direct push":
        line = main.push(set_policy(pushed))
    else:
        line = merge_reviewed(main, 2, set_policy(pushed), approvers=())
    assert main.deploy(registry, pushed, line) == 0  # no model changed: nothing recorded
    return pushed, line


@pytest.mark.parametrize("how", ["direct push", "admin merge"])
def test_a_baseline_line_nobody_approved_launders_a_direct_push_the_naive_way(
    main: Main, tmp_path: Path, monkeypatch, how: str
) -> None:
    """Without the guard (the policy at the pushed commit trusted as it stands) a manifest-only
    bump publishes the artifact the refused direct push brought."""
    registry = tmp_path / "registry"
    _pushed_then_baselined(main, registry, how)
    third = main.merge(3, manifest_version("iris", "6.6.7"))
    monkeypatch.setattr(reverify.RangeJudge, "_baseline_why_not", lambda *a: None)
    assert main.deploy(registry, git(main.repo, "rev-parse", f"{third}^"), third) == 0
    assert _serving(registry)["iris"] == ("6.6.7", 3)


@pytest.mark.parametrize("how", ["direct push", "admin merge"])
def test_a_baseline_line_nobody_approved_vouches_for_nothing(
    main: Main, tmp_path: Path, how: str
) -> None:
    registry = tmp_path / "registry"
    pushed, line = _pushed_then_baselined(main, registry, how)
    third = main.merge(3, manifest_version("iris", "6.6.7"))
    assert main.deploy(registry, line, third) == 1
    assert _serving(registry)["iris"] == ("1.1.0", 1)
    reason = _refusals(registry)[-1]
    assert reason.startswith(f"models/iris/model.skops at {third[:12]}: no approved pull request")
    named = f"these bytes at the baseline {pushed[:12]} ({POLICY}:6, deploy.reviewed_at)"
    if how == "direct push":
        why = f"deploy.reviewed_at was set by {line[:12]}, which no merged pull request produced"
    else:
        why = "deploy.reviewed_at was set by pull request #2, merged without the approvals it needs"
    assert f"{named}, which does not count: {why}" in reason


def _admin_line_then_approved_tiers(main: Main, registry: Path) -> tuple[str, str]:
    """The line written by an admin merge (#2), then an approved pull request (#3, the high
    tier) that changes only the policy's tiers: the file's bytes are #3's, the line #2's."""
    pushed, _ = _pushed_then_baselined(main, registry, "admin merge")
    third = merge_reviewed(main, 3, set_policy(pushed, tier="medium"))
    fourth = main.merge(4, manifest_version("iris", "6.6.7"))
    return third, fourth


def test_an_approved_edit_of_another_part_of_the_policy_launders_the_line_the_naive_way(
    main: Main, tmp_path: Path, monkeypatch
) -> None:
    """Asking only whether the policy file's bytes were brought by an approved pull request
    (the last change to the file) lets #3 vouch for a line its reviewers never saw change."""
    registry = tmp_path / "registry"
    third, fourth = _admin_line_then_approved_tiers(main, registry)

    def policy_bytes_brought_by_an_approved_pull_request(judge, baseline, evidence):
        judged = judge.judged(judge._landing_pull(evidence.last_change(POLICY), evidence))
        blob = judge._blob(POLICY, judge.sha)
        approved = judged.decision.approved and judge._introduced(judged, POLICY, blob)
        return None if approved else "not brought by an approved pull request"

    monkeypatch.setattr(
        reverify.RangeJudge, "_baseline_why_not", policy_bytes_brought_by_an_approved_pull_request
    )
    assert main.deploy(registry, third, fourth) == 0
    assert _serving(registry)["iris"] == ("6.6.7", 4)


def test_an_approved_edit_of_another_part_of_the_policy_does_not_vouch_for_the_line(
    main: Main, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    third, fourth = _admin_line_then_approved_tiers(main, registry)
    assert main.deploy(registry, third, fourth) == 1
    assert _serving(registry)["iris"] == ("1.1.0", 1)
    reason = _refusals(registry)[-1]
    assert "deploy.reviewed_at was set by pull request #2, merged without the approvals" in reason


def _named_before_it_landed(main: Main, registry: Path) -> tuple[str, str, str]:
    """The attacker commits iris 6.6.6 as R on top of main (not pushed yet) and opens #2,
    whose only change is `reviewed_at: R`; #2 is approved. Then R is pushed to main (refused,
    on the record) and #2 merged; #3 bumps iris's manifest only. (R, #2's merge, #3's)"""
    first = main.first_deployed(registry)
    git(main.repo, "checkout", "-q", "-b", "r")
    bump("iris", "6.6.6")(main.repo)
    r = main.commit("iris 6.6.6")
    main.gh.set_files(r, tree(main.repo, r))  # on GitHub once pushed: #2 is merged onto it
    git(main.repo, "checkout", "-q", "main")
    git(main.repo, "checkout", "-q", "-b", "pr2")
    set_policy(r)(main.repo)
    head = main.commit("adopt")
    pull = main.pull(2, first, head)
    pull.add_review("bob", "APPROVED")
    pull.add_review("dave", "APPROVED")
    git(main.repo, "checkout", "-q", "main")
    git(main.repo, "merge", "-q", "--ff-only", "r")  # R pushed straight to main
    assert main.deploy(registry, first, r) == 1
    git(main.repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #2", head)
    second = main.head
    pull.merge(second, files=tree(main.repo, second))
    assert main.deploy(registry, r, second) == 0  # no model changed
    third = main.merge(3, manifest_version("iris", "6.6.7"))
    return r, second, third


def test_a_line_naming_a_commit_the_branch_did_not_hold_at_its_base_launders_the_naive_way(
    main: Main, tmp_path: Path, monkeypatch
) -> None:
    registry = tmp_path / "registry"
    _, second, third = _named_before_it_landed(main, registry)
    monkeypatch.setattr(deploy_range, "on_first_parent_chain", lambda repo, commit, tip: True)
    assert main.deploy(registry, second, third) == 0
    assert _serving(registry)["iris"] == ("6.6.7", 3)


def test_a_line_naming_a_commit_the_branch_did_not_hold_at_its_base_vouches_for_nothing(
    main: Main, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    r, second, third = _named_before_it_landed(main, registry)
    assert main.deploy(registry, second, third) == 1
    assert _serving(registry)["iris"] == ("1.1.0", 1)
    reason = _refusals(registry)[-1]
    assert (
        f"deploy.reviewed_at was set by pull request #2, but {r[:12]} was not on the default "
        "branch's first-parent history at its base" in reason
    )


@pytest.mark.parametrize("where", ["another branch", "a merged branch", "nowhere"])
def test_a_line_naming_a_commit_off_the_branch_s_first_parent_history_vouches_for_nothing(
    main: Main, tmp_path: Path, where: str
) -> None:
    """Not an ancestor, not in the clone, or a commit of a pull request's own branch (whose
    tree the default branch never held): named in an approved pull request, still refused."""
    registry = tmp_path / "registry"
    git(main.repo, "checkout", "-q", "-b", "side")
    bump("rose", "6.6.6")(main.repo)
    side = main.commit("side")
    git(main.repo, "checkout", "-q", "main")
    if where == "a merged branch":
        named = main.merge(1, bump("iris", "1.1.0"))  # a merge: its branch's commit is named
        named = git(main.repo, "rev-parse", f"{named}^2")
    else:
        named = side if where == "another branch" else "0123456789abcdef" * 2 + "01234567"
        main.merge(1, bump("iris", "1.1.0"))
    second = merge_reviewed(main, 2, set_policy(named))
    third = main.merge(3, manifest_version("rose", "1.0.1"))
    assert main.deploy(registry, second, third) == 1
    reason = _refusals(registry)[-1]
    assert (
        f"the baseline {named[:12]} ({POLICY}:6, deploy.reviewed_at) does not count: "
        f"{named[:12]} is not a commit of the default branch's first-parent history up to "
        f"{third[:12]}" in reason
    )


# --- the key in the policy file ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["main", "v1.0.0", "1a2b3c4", "HEAD~1", "0123456789ABCDEF0123456789ABCDEF01234567"]
)
def test_validate_names_the_line_of_a_baseline_that_is_not_a_full_sha(
    tmp_path: Path, capsys, value: str
) -> None:
    write_model(tmp_path, "iris")
    (tmp_path / ".mlops").mkdir()
    (tmp_path / POLICY).write_text(policy_text(value))
    assert cli.main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert f"{POLICY}:6:" in out, out
    assert "deploy.reviewed_at" in out and "must be a full commit SHA" in out


def test_an_unknown_key_under_deploy_is_named_with_its_line() -> None:
    text = "apiVersion: mlops-ci/v1\nkind: Policy\ntiers: {}\ndeploy:\n  reviewd_at: x\n"
    parsed, [problem] = policy.parse_policy(text)
    assert parsed is None and problem.line == 5
    assert "unknown field 'reviewd_at' (did you mean 'reviewed_at'?)" in problem.message


def test_the_line_is_read_with_its_line_number() -> None:
    sha = "a" * 40
    parsed, problems = policy.parse_policy(policy_text(sha))
    assert problems == [] and parsed is not None
    assert parsed.reviewed_at == policy.ReviewedAt(sha, 6)
    assert policy.reviewed_at_of(policy_text(sha)) == sha
    assert policy.reviewed_at_of(policy_text(None)) is None
    assert policy.reviewed_at_of(b"{not yaml") is None
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
