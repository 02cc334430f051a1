"""Attacks on what a push deploys (`deploy_range`, `deploy_push`, `reverify`): each test shows a
way an approved model was silently dropped, or unreviewed bytes shipped, and that deploy now
refuses it or deploys it on a later push.

Real git repositories in tmp_path, tests/ghserver.py as GitHub, a folder registry, the real iris
model (the `Main` of tests/test_deploy_range.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from deploy_models import git, tree, write_build, write_model
from test_deploy_range import RUNS, Main, _queued, _serving, bump, new_main
from test_deploy_reviewed import _deploy

from mlops_ci import audit, deploy_range
from mlops_ci.registry import open_registry


@pytest.fixture
def main(ghserver, monkeypatch, tmp_path: Path) -> Main:
    return new_main(ghserver, monkeypatch, tmp_path)


def _records(registry: Path) -> list[dict]:
    return audit.records(open_registry(registry))


# --- a model with no build, then a model published after it -----------------------------------


def test_a_model_whose_build_failed_is_deployed_by_the_next_push_even_when_one_after_it_published(
    main: Main, tmp_path: Path, capsys
) -> None:
    """#2 (wine) and #3 (rose) are deployed by #3's run; rose's build failed. rose sorts before
    wine, so wine was published AFTER rose's `deploy stopped by an error` record: the newest
    record of #3's commit was then wine's `deploy`, the commit counted as processed, and the
    next push's range started after it. Rose 1.1.0, approved in #3, was never deployed, and
    nothing failed again (it fired: rose stayed at 1.0.0 with exit 0 on #4's push)."""
    registry = tmp_path / "registry"
    first, second, third = _queued(main, registry)
    assert main.deploy(registry, second, third, unbuilt="rose") == 2
    assert "no build of rose" in capsys.readouterr().err
    assert _serving(registry)["wine"] == ("1.1.0", 2)
    [rose, wine] = [r for r in _records(registry) if r["commit"] == third]
    assert rose["model"] == "rose" and rose["reason"].startswith(deploy_range.ERROR_PREFIX)
    assert wine["action"] == "deploy"  # after the error: the commit's newest record
    fourth = main.merge(4, bump("iris", "1.2.0"))
    # the next push starts before #3's commit, which was not processed
    assert deploy_range.last_processed(open_registry(registry), main.repo, fourth, RUNS) == first
    assert main.deploy(registry, third, fourth) == 0, capsys.readouterr()
    assert _serving(registry) == {
        "iris": ("1.2.0", 4),
        "rose": ("1.1.0", 3),
        "wine": ("1.1.0", 2),
    }


# --- one model's problem refused every model of the range, and counted as processed ---------


def test_one_model_s_problem_does_not_drop_the_approved_models_of_its_range(
    main: Main, tmp_path: Path, capsys
) -> None:
    """#2 (wine 1.1.0, approved) and #3 (a new rose artifact without a version bump, approved
    by its owner, merged with its check red) land in one range. A problem of the plan refused
    EVERY model of the range as a verdict, so the commit counted as processed: when #4 fixed
    rose, wine 1.1.0 was outside every later range and never deployed (it fired: wine stayed
    1.0.0). Now the problem refuses rose alone; wine deploys with #2's approval."""
    registry = tmp_path / "registry"
    main.first_deployed(registry)
    second = main.merge(2, bump("wine", "1.1.0"))
    third = main.merge(3, bump("rose", "1.0.0"))  # new bytes, same semver
    assert main.deploy(registry, second, third) == 1
    out = capsys.readouterr().out
    assert "the artifact changed but the version did not increase" in out
    assert _serving(registry)["wine"] == ("1.1.0", 2)
    refused = [r for r in _records(registry) if r["action"] == "refused"]
    assert [r["model"] for r in refused] == ["rose"]
    fourth = main.merge(4, bump("rose", "1.1.0"))
    assert main.deploy(registry, third, fourth) == 0, capsys.readouterr()
    assert _serving(registry) == {
        "iris": ("1.1.0", 1),
        "rose": ("1.1.0", 4),
        "wine": ("1.1.0", 2),
    }


def test_a_broken_manifest_holds_back_no_other_model(main: Main, tmp_path: Path, capsys) -> None:
    """A manifest no name can be read from (an admin merge, or one with its check red) names no
    model deploy could publish: it is refused on the record, and the range's others deploy."""
    registry = tmp_path / "registry"
    main.first_deployed(registry)
    second = main.merge(2, bump("wine", "1.1.0"))

    def broken(repo: Path) -> None:
        (repo / "models" / "rose" / "model.yaml").write_text("metadata: [\n")

    third = main.merge(3, broken, approved=False)
    assert _deploy(main, registry, second, third, ["wine"]) == 1
    out = capsys.readouterr().out
    assert "models/rose/model.yaml" in out
    assert _serving(registry)["wine"] == ("1.1.0", 2)
    [refused] = [r for r in _records(registry) if r["action"] == "refused"]
    assert refused["model"] is None and "models/rose/model.yaml" in refused["reason"]


def test_a_second_manifest_claiming_a_name_does_not_drop_that_model_s_approved_change(
    main: Main, tmp_path: Path, capsys
) -> None:
    """#2 bumps iris (approved by its owners). #3, approved for a new model at the low tier,
    adds models/iris2 whose manifest claims the name iris too. The name is ambiguous, so
    neither deploys; but that was a verdict, the commit counted as processed, and once #4
    removed the second manifest, iris 1.1.0 was outside every later range (it fired: iris
    stayed at 1.0.0). Now the ambiguity is recorded as an error: the next push covers it."""
    registry = tmp_path / "registry"
    first = main.merge(1, bump("wine", "1.1.0"))
    assert main.deploy(registry, git(main.repo, "rev-parse", f"{first}^"), first) == 0
    second = main.merge(2, bump("iris", "1.1.0"))

    def claim(repo: Path) -> None:
        write_model(repo, "iris2", "1.0.0", salt="iris2")
        _set("iris2", name="iris")(repo)

    third = main.merge(3, claim)
    assert main.deploy(registry, second, third) == 1
    assert "'iris' is also the name of" in capsys.readouterr().out
    assert "iris" not in _serving(registry)
    [record] = [r for r in _records(registry) if r["commit"] == third]
    assert record["model"] == "iris" and record["reason"].startswith(deploy_range.ERROR_PREFIX)

    def unclaim(repo: Path) -> None:
        import shutil

        shutil.rmtree(repo / "models" / "iris2")

    fourth = main.merge(4, unclaim)
    assert main.deploy(registry, third, fourth) == 0, capsys.readouterr()
    assert _serving(registry)["iris"][0] == "1.1.0"


# --- a path git stores as bytes that are not UTF-8 ---------------------------------------------


def test_a_commit_with_a_path_that_is_not_utf8_does_not_stop_every_later_deploy(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A push adds `docs/\\xff.txt` (git stores paths as bytes) and a later one removes it.
    plan decoded every path of a diff as UTF-8: deploy stopped with an internal error, wrote
    no record and no Deployment, and since `touching` replays each commit of the range from
    the last processed one, every later deploy stopped the same way, for good (it fired:
    exit 2 on both pushes, iris never deployed)."""
    registry = tmp_path / "registry"
    first = main.merge(1, bump("wine", "1.1.0"))
    assert main.deploy(registry, git(main.repo, "rev-parse", f"{first}^"), first) == 0
    odd = main.repo / "docs" / "odd"
    odd.parent.mkdir()
    main.push(lambda repo: Path(os.fsdecode(bytes(odd) + b"\xff.txt")).write_bytes(b"x"))
    main.push(lambda repo: Path(os.fsdecode(bytes(odd) + b"\xff.txt")).unlink())
    second = main.merge(2, bump("iris", "1.1.0"))
    assert main.deploy(registry, first, second) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("1.1.0", 2)
    third = main.merge(3, bump("rose", "1.1.0"))
    assert main.deploy(registry, second, third) == 0, capsys.readouterr()
    assert _serving(registry)["rose"] == ("1.1.0", 3)


def test_a_manifest_in_a_folder_whose_name_is_not_utf8_is_refused_by_plan(tmp_path: Path) -> None:
    """plan cannot name such a manifest to the build job or to GitHub: a problem, with the path
    as git's bytes escaped, never a traceback."""
    from mlops_ci import plan

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_model(repo, "iris", "1.0.0")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    folder = Path(os.fsdecode(bytes(repo / "models") + b"/\xe9t\xe9"))
    folder.mkdir()
    (folder / "model.yaml").write_bytes((repo / "models" / "iris" / "model.yaml").read_bytes())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two")
    result = plan.plan(repo, "HEAD~1", "HEAD")
    assert result.changed == ()
    [problem] = result.problems
    assert problem.path == "models/\\xe9t\\xe9/model.yaml"
    assert "not UTF-8" in problem.message


def test_a_bug_inside_deploy_is_on_the_record_and_the_range_is_covered_again(
    main: Main, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Anything but an MlopsCiError (a bug, such as the UTF-8 one above) went past deploy's
    fail-closed handling: no audit record, no failed Deployment, only the CLI's message."""
    registry = tmp_path / "registry"
    first = main.merge(1, bump("wine", "1.1.0"))
    assert main.deploy(registry, git(main.repo, "rev-parse", f"{first}^"), first) == 0
    second = main.merge(2, bump("iris", "1.1.0"))

    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    with monkeypatch.context() as patch:
        patch.setattr(deploy_range, "touching", boom)
        assert main.deploy(registry, first, second) == 2
    assert "internal error: RuntimeError: boom" in capsys.readouterr().err
    [record] = [r for r in _records(registry) if r["commit"] == second]
    assert record["model"] == "iris" and record["reason"].startswith(
        f"{deploy_range.ERROR_PREFIX} internal error: RuntimeError: boom"
    )
    deployments = main.gh.deployments
    assert deployments and deployments[-1]["statuses"][-1]["state"] == "failure"
    third = main.merge(3, bump("rose", "1.1.0"))
    assert main.deploy(registry, second, third) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("1.1.0", 2)


# --- a file GitHub lists as copied shows no bytes, as a rename does ------------------------------


def test_an_artifact_copied_by_a_pull_request_was_not_reviewed_by_it(
    main: Main, tmp_path: Path
) -> None:
    """The direct push's unreviewed model.skops, copied to m.skops (the manifest pointed at
    it): GitHub lists the copy as `copied` with its `previous_filename`, and its diff shows
    no bytes, as a rename's does; `_introduced` looked only at renames, so the copy vouched
    for the bytes (it fired: iris 6.6.7 was published with the direct push's artifact)."""
    from test_deploy_reviewed import _refusals, artifact_moved

    registry = tmp_path / "registry"
    third = artifact_moved(main, registry, "copied")
    reason = _refusals(registry)[-1]
    assert reason.startswith(f"models/iris/m.skops at {third[:12]}: no approved pull request")


# --- held: a symlink shows its target's name, never its bytes --------------------------------


def test_an_artifact_turned_into_a_symlink_is_judged_by_the_bytes_it_points_at(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A direct push adds docs/blob.bin (no model's folder: nothing refused, nothing recorded).
    #2, approved, turns iris's model.skops into a symlink to it: its diff shows the link's
    target, a path. The build converts the bytes on disk, so the manifest resolves the link
    and deploy judges docs/blob.bin, which no pull request changed: refused."""
    import hashlib

    import yaml

    registry = tmp_path / "registry"
    first = main.merge(1, bump("wine", "1.1.0"))
    assert main.deploy(registry, git(main.repo, "rev-parse", f"{first}^"), first) == 0
    blob = (main.repo / "models" / "iris" / "model.skops").read_bytes() + b"evil"

    def add_blob(repo: Path) -> None:
        (repo / "docs").mkdir()
        (repo / "docs" / "blob.bin").write_bytes(blob)

    main.push(add_blob)

    def link(repo: Path) -> None:
        folder = repo / "models" / "iris"
        (folder / "model.skops").unlink()
        (folder / "model.skops").symlink_to("../../docs/blob.bin")
        doc = yaml.safe_load((folder / "model.yaml").read_text())
        doc["spec"]["artifact"]["sha256"] = hashlib.sha256(blob).hexdigest()
        doc["metadata"]["version"] = "1.1.0"
        (folder / "model.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    second = main.merge(2, link)
    assert main.deploy(registry, first, second) == 1
    assert "iris" not in _serving(registry)
    [record] = [r for r in _records(registry) if r["action"] == "refused"]
    assert record["model"] == "iris"
    assert record["reason"].startswith(f"docs/blob.bin at {second[:12]}: no approved pull request")
    capsys.readouterr()


# --- a registry name taken over by another folder: the name keeps its published tier ------------


def _set(name_in: str, **meta: object) -> Callable[[Path], object]:
    """Change the manifest of folder models/<name_in>: its metadata fields in `meta`, and, with
    `salt`, a retrained artifact (new bytes, pinned)."""

    def change(repo: Path) -> None:
        import hashlib

        import yaml

        path = repo / "models" / name_in / "model.yaml"
        doc = yaml.safe_load(path.read_text())
        salt = meta.pop("salt", None)
        if salt is not None:
            art = repo / "models" / name_in / "model.skops"
            data = art.read_bytes() + str(salt).encode()
            art.write_bytes(data)
            doc["spec"]["artifact"]["sha256"] = hashlib.sha256(data).hexdigest()
        doc["metadata"].update(meta)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    return change


OWNERS = ("dave", "erin")


def _iris_renamed_away(main: Main, registry: Path) -> str:
    """iris, high risk and owned by @dave and @erin, published as 1.1.0 from #1 (a first
    deploy: nothing published under the name yet), then renamed to iris-old by #2, which
    both approve: the name iris is free in the tree. Returns #2's merge commit."""
    for login in OWNERS:
        main.gh.permissions[login] = "write"
    main.push(_set("iris", risk="high", owners=["@dave", "@erin"]))  # before mlops-ci
    first = main.merge(1, _set("iris", version="1.1.0", salt=1), approvers=OWNERS)
    assert _deploy(main, registry, git(main.repo, "rev-parse", f"{first}^"), first, ["iris"]) == 0
    second = main.merge(2, _set("iris", name="iris-old", version="1.2.0"), approvers=OWNERS)
    _deploy(main, registry, first, second, [])  # iris-old: refused or not, iris is free
    return second


def _deploy_wine_as_iris(main: Main, registry: Path, before: str, after: str) -> int:
    """Deploy `after`, with models/wine (now named iris) built as iris."""
    from mlops_ci import cli

    builds = main.tmp / f"builds-takeover-{registry.name}"
    write_build(builds / "iris", main.repo / "models" / "wine" / "model.yaml")
    return cli.main(
        [
            *("deploy", "--registry", str(registry), "--builds", str(builds)),
            *("--repo", str(main.repo), "--sha", after, "--base", before),
        ]
    )


def test_a_name_the_registry_serves_taken_over_by_a_low_risk_folder_keeps_its_tier(
    main: Main, tmp_path: Path, capsys, monkeypatch
) -> None:
    """#3 renames wine (low risk, @alice's) to iris with new bytes: approved by bob alone at the
    low tier (the gate's tier and owners are the FILE's, wine's, at base and head), it
    published over the registry's iris, which Triton and KServe clients call by its NAME
    (it fired: iris 9.0.0 served, approved by bob). `_names_taken` sees only the pushed tree.
    Now the name keeps the tier and owners it was last published with: refused, on the record,
    with the approvals it needs named."""
    import shutil

    from mlops_ci import deploy_push

    registry = tmp_path / "registry"
    second = _iris_renamed_away(main, registry)
    third = main.merge(3, _set("wine", name="iris", version="9.0.0", salt="evil"))
    capsys.readouterr()
    # the naive way (no registry side: the gate's decision alone) publishes over iris
    naive = tmp_path / "naive"
    shutil.copytree(registry, naive)
    with monkeypatch.context() as patch:
        patch.setattr(deploy_push, "_registry_side", lambda *args: None)
        assert _deploy_wine_as_iris(main, naive, second, third) == 0
    assert _serving(naive)["iris"] == ("9.0.0", 3)
    capsys.readouterr()
    deployments = len(main.gh.deployments)
    assert _deploy_wine_as_iris(main, registry, second, third) == 1
    out = capsys.readouterr().out
    assert _serving(registry)["iris"] == ("1.1.0", 1)
    [record] = [r for r in _records(registry) if r["commit"] == third]
    assert record["action"] == "refused" and record["model"] == "iris"
    reason = record["reason"]
    assert reason.startswith("iris was last published as iris/1/model.yaml (registry ")
    assert "(risk: high, owners: @dave, @erin)" in reason
    assert "pull request #3 does not meet them" in reason
    assert "iris (risk: high) needs 2 more approvals from its owners (@dave, @erin)" in reason
    assert reason in out
    [refused] = main.gh.deployments[deployments:]
    assert refused["statuses"][-1]["state"] == "failure"
    assert audit.verify(open_registry(registry)).ok
    # the way the message names: a pull request that changes it, approved by iris's owners
    fourth = main.merge(4, _set("wine", version="9.0.1"), approvers=OWNERS)
    assert _deploy_wine_as_iris(main, registry, third, fourth) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("9.0.1", 4)


def test_a_name_taken_over_with_the_approval_of_its_registry_owners_deploys(
    main: Main, tmp_path: Path, capsys
) -> None:
    """The same takeover approved by iris's owners as well as wine's stand-in meets both bars
    (the file's at the gate, the name's at deploy), with no GitHub call beyond the gate's:
    the owners are users, and the reviews and permissions were read already."""
    registry = tmp_path / "registry"
    second = _iris_renamed_away(main, registry)
    third = main.merge(
        3, _set("wine", name="iris", version="9.0.0", salt="new"), approvers=("bob", *OWNERS)
    )
    before = len(main.gh.server.calls())
    assert _deploy_wine_as_iris(main, registry, second, third) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("9.0.0", 3)
    asked = [r.path for r in main.gh.server.calls()[before:]]
    assert not [p for p in asked if "/teams/" in p]
    assert len([p for p in asked if p.endswith("/permission")]) == 3  # the gate's own


def test_a_model_whose_folder_moves_and_whose_name_stays_deploys_on_its_owners_approval(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A rename of a model's folder that keeps its name (models/iris -> models/iris-flowers),
    approved by its owners, and then an ordinary version bump by them: each meets the name's
    registry tier and owners, which are its own. A bump approved by bob alone is refused by
    the gate's own decision, as before."""
    import shutil

    registry = tmp_path / "registry"
    for login in OWNERS:
        main.gh.permissions[login] = "write"
    main.push(_set("iris", risk="high", owners=["@dave", "@erin"]))
    first = main.merge(1, _set("iris", version="1.1.0", salt=1), approvers=OWNERS)
    assert _deploy(main, registry, git(main.repo, "rev-parse", f"{first}^"), first, ["iris"]) == 0

    def move(repo: Path) -> None:
        shutil.move(repo / "models" / "iris", repo / "models" / "iris-flowers")
        _set("iris-flowers", version="1.2.0", salt=2)(repo)

    second = main.merge(2, move, approvers=OWNERS)
    builds = main.tmp / "builds-moved"
    write_build(builds / "iris", main.repo / "models" / "iris-flowers" / "model.yaml")
    from mlops_ci import cli

    def deploy(before: str, after: str) -> int:
        write_build(builds / "iris", main.repo / "models" / "iris-flowers" / "model.yaml")
        return cli.main(
            [
                *("deploy", "--registry", str(registry), "--builds", str(builds)),
                *("--repo", str(main.repo), "--sha", after, "--base", before),
            ]
        )

    assert deploy(first, second) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("1.2.0", 2)
    third = main.merge(3, _set("iris-flowers", version="1.3.0", salt=3), approvers=OWNERS)
    assert deploy(second, third) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("1.3.0", 3)
    fourth = main.merge(4, _set("iris-flowers", version="1.4.0", salt=4))  # bob alone
    assert deploy(third, fourth) == 1
    assert "needs 2 more approvals from its owners" in capsys.readouterr().out
    assert _serving(registry)["iris"] == ("1.3.0", 3)


def test_owners_handed_over_and_a_bump_by_the_new_ones_deploy_together(
    main: Main, tmp_path: Path, capsys
) -> None:
    """#2 hands iris from @erin to @frank (approved by @dave and @erin, its owners at base) and
    #3, approved by @dave and @frank, bumps it; one push deploys both. The registry still says
    @dave and @erin, but #2 met that bar and gave the name its new owners: #3 is judged by
    them (judged by the registry's alone, it would be refused for want of @erin's approval)."""
    registry = tmp_path / "registry"
    for login in (*OWNERS, "frank"):
        main.gh.permissions[login] = "write"
    main.push(_set("iris", risk="high", owners=["@dave", "@erin"]))
    first = main.merge(1, _set("iris", version="1.1.0", salt=1), approvers=OWNERS)
    assert _deploy(main, registry, git(main.repo, "rev-parse", f"{first}^"), first, ["iris"]) == 0
    main.merge(2, _set("iris", owners=["@dave", "@frank"]), approvers=OWNERS)
    third = main.merge(3, _set("iris", version="1.2.0", salt=3), approvers=("dave", "frank"))
    assert _deploy(main, registry, first, third, ["iris"]) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("1.2.0", 3)


def test_a_name_owned_by_a_team_asks_the_team_of_its_reviewers(
    main: Main, tmp_path: Path, capsys
) -> None:
    """iris owned by @acme/iris-team (@dave and @erin). The takeover of its name, approved by
    bob, @dave and @erin, meets the name's bar only through the team: its membership is asked
    (the low tier's own decision asked none), and it deploys; approved by bob and @mallory
    (write access, no member) it is refused."""
    registry = tmp_path / "registry"
    for login in (*OWNERS, "mallory"):
        main.gh.permissions[login] = "write"
        if login != "mallory":
            main.gh.server.add_team_member("@acme/iris-team", login)
    main.push(_set("iris", risk="high", owners=["@acme/iris-team"]))
    first = main.merge(1, _set("iris", version="1.1.0", salt=1), approvers=OWNERS)
    assert _deploy(main, registry, git(main.repo, "rev-parse", f"{first}^"), first, ["iris"]) == 0
    second = main.merge(2, _set("iris", name="iris-old", version="1.2.0"), approvers=OWNERS)
    _deploy(main, registry, first, second, [])
    third = main.merge(
        3, _set("wine", name="iris", version="9.0.0", salt="m"), approvers=("bob", "mallory")
    )
    assert _deploy_wine_as_iris(main, registry, second, third) == 1
    assert "owners: @acme/iris-team" in capsys.readouterr().out
    assert _serving(registry)["iris"] == ("1.1.0", 1)
    fourth = main.merge(4, _set("wine", version="9.0.1"), approvers=("bob", *OWNERS))
    before = len(main.gh.server.calls())
    assert _deploy_wine_as_iris(main, registry, third, fourth) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("9.0.1", 4)
    asked = [r.path for r in main.gh.server.calls()[before:]]
    assert [p for p in asked if "/teams/iris-team/" in p]


# --- a policy merged while the pull request was open ------------------------------------------


def test_a_policy_merged_after_a_pull_request_branched_governs_its_merge(
    main: Main, tmp_path: Path
) -> None:
    """#2 (wine 1.1.0) branched from main at `start`; #3 then added a policy that asks two
    approvals of a low-risk model, and merged first. #2, approved by bob alone, merged on top.
    GitHub's base.sha of #2 is still `start`, where no policy existed: judged there alone, the
    built-in defaults let one approval do (it fired: wine 1.1.0 was published). It merged into
    the branch as #3 left it, so that policy governs it too."""
    registry = tmp_path / "registry"
    start = main.head
    git(main.repo, "checkout", "-q", "-b", "pr2")
    bump("wine", "1.1.0")(main.repo)
    head = main.commit("change 2")
    git(main.repo, "checkout", "-q", "main")

    def policy(repo: Path) -> None:
        (repo / ".mlops").mkdir()
        (repo / ".mlops" / "policy.yaml").write_text(
            "apiVersion: mlops-ci/v1\nkind: Policy\ntiers:\n  low: {approvals: 2}\n"
        )

    main.gh.permissions["erin"] = "write"
    third = main.merge(3, policy, approvers=("bob", "erin"))  # the high tier: two approvals
    git(main.repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #2", head)
    second = main.head
    pull = main.pull(2, start, head)
    pull.add_review("bob", "APPROVED")
    pull.merge(second, files=tree(main.repo, second))
    assert main.deploy(registry, start, second) == 1
    assert "wine" not in _serving(registry)
    [refused] = [r for r in _records(registry) if r["action"] == "refused"]
    assert refused["model"] == "wine"
    assert "pull request #2 was merged without the approvals it needs" in refused["reason"]
    assert f"with the base branch at {third[:12]}" in refused["reason"]
    assert "wine (risk: low) needs 1 more approval" in refused["reason"]
