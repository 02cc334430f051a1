"""A push publishes only REVIEWED bytes: each of a model's manifest and artifact at the pushed
commit was changed to those bytes by an approved pull request, or is the file of a version the
registry serves or published last.

Binding the pushed bytes to the last pull request's approved head is not enough: that head also
holds what its base held. An administrator pushes a new model.skops straight to main (refused
and recorded, so the next push starts after it); a pull request that only edits the model's
README is approved and merged; its head's blobs equal the pushed ones, and the artifact no
reviewer ever saw in a diff would publish (shown to fire first, with the check taken out).

Real git repositories in tmp_path, tests/ghserver.py as GitHub, a folder registry, the real iris
model (the `Main` of tests/test_deploy_range.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from deploy_models import git, tree, write_build, write_model
from test_deploy_range import REPO, Main, _serving, bump, new_main

from mlops_ci import audit, reverify
from mlops_ci.registry import open_registry


@pytest.fixture
def main(ghserver, monkeypatch, tmp_path: Path) -> Main:
    return new_main(ghserver, monkeypatch, tmp_path)


def readme(name: str) -> Callable[[Path], object]:
    return lambda repo: (repo / "models" / name / "README.md").write_text("notes\n")


def manifest_version(name: str, version: str) -> Callable[[Path], object]:
    """Only `metadata.version` changes: the artifact, and the manifest's pin of it, stay."""

    def change(repo: Path) -> None:
        path = repo / "models" / name / "model.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["metadata"]["version"] = version
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    return change


def _deploy(main: Main, registry: Path, before: str, after: str, names: list[str]) -> int:
    """`mlops-ci deploy` with a build of each of `names` (Main.deploy builds its three)."""
    from mlops_ci import cli

    builds = main.tmp / f"builds-{after[:8]}"
    for name in names:
        write_build(builds / name, main.repo / "models" / name / "model.yaml")
    return cli.main(
        [
            *("deploy", "--registry", str(registry), "--builds", str(builds)),
            *("--repo", str(main.repo), "--sha", after, "--base", before),
        ]
    )


def _refusals(registry: Path) -> list[str]:
    return [r["reason"] for r in audit.records(open_registry(registry)) if r["action"] == "refused"]


def _deployed_then_pushed(main: Main, registry: Path) -> tuple[str, str]:
    """iris 1.1.0 deployed through #1; then an administrator pushes iris 6.6.6 (a new
    model.skops and manifest) straight to main: refused, on the record. (#1's, the push's)"""
    first = main.first_deployed(registry)
    pushed = main.push(bump("iris", "6.6.6"))
    assert main.deploy(registry, first, pushed) == 1
    [reason] = _refusals(registry)
    assert "direct push" in reason
    return first, pushed


def test_a_refused_direct_push_s_bytes_publish_through_a_readme_pull_request_the_naive_way(
    main: Main, tmp_path: Path, monkeypatch
) -> None:
    """Without the check (the last pull request's approved head is all that binds the bytes)
    the README's pull request publishes the pushed artifact, naming #3 as its approval."""
    registry = tmp_path / "registry"
    _, pushed = _deployed_then_pushed(main, registry)
    third = main.merge(3, readme("iris"))
    monkeypatch.setattr(reverify.RangeJudge, "_unreviewed", lambda *a: None)
    assert main.deploy(registry, pushed, third) == 0
    assert _serving(registry)["iris"] == ("6.6.6", 3)


def test_a_refused_direct_push_s_bytes_do_not_publish_through_a_readme_pull_request(
    main: Main, tmp_path: Path, capsys
) -> None:
    registry = tmp_path / "registry"
    _, pushed = _deployed_then_pushed(main, registry)
    third = main.merge(3, readme("iris"))
    assert main.deploy(registry, pushed, third) == 1
    assert _serving(registry)["iris"] == ("1.1.0", 1)
    reason = _refusals(registry)[-1]
    assert reason.startswith(
        f"models/iris/model.yaml and models/iris/model.skops at {third[:12]}: no approved pull "
        "request changed them to these bytes, and no version of iris that the registry serves "
        "or published last has these bytes"
    )
    assert f"last changed by {pushed[:12]}, which no merged pull request produced" in reason
    assert "refused: models/iris/model.yaml and models/iris/model.skops" in capsys.readouterr().out
    failed = [d for d in main.gh.deployments if d["statuses"][-1]["state"] == "failure"]
    assert failed[-1]["payload"]["models"] == ["iris"]
    assert failed[-1]["payload"]["refused"] == reason
    assert audit.verify(open_registry(registry)).ok
    # A pull request that does change them (and so shows them to its reviewers) deploys.
    fourth = main.merge(4, bump("iris", "7.0.0"))
    assert main.deploy(registry, third, fourth) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("7.0.0", 4)


@pytest.mark.parametrize("source", ["direct push", "admin merge"])
def test_a_manifest_only_pull_request_over_an_unreviewed_artifact_is_refused(
    main: Main, tmp_path: Path, source: str
) -> None:
    """#3 bumps iris's metadata.version (and so is approved for iris, the manifest at its
    head is reviewed), but the artifact it pins came from a direct push or an admin merge."""
    registry = tmp_path / "registry"
    first = main.first_deployed(registry)
    if source == "direct push":
        came = main.push(bump("iris", "6.6.6"))
        why = f"last changed by {came[:12]}, which no merged pull request produced"
    else:
        came = main.merge(2, bump("iris", "6.6.6"), approved=False)
        why = "last changed by pull request #2, merged without the approvals it needs"
    assert main.deploy(registry, first, came) == 1
    third = main.merge(3, manifest_version("iris", "6.6.7"))
    assert main.deploy(registry, came, third) == 1
    assert _serving(registry)["iris"] == ("1.1.0", 1)
    reason = _refusals(registry)[-1]
    assert reason.startswith(
        f"models/iris/model.skops at {third[:12]}: no approved pull request changed it to these "
        "bytes"
    )
    assert "model.yaml" not in reason  # #3 changed the manifest: that one was reviewed
    assert f"({why})" in reason


def test_a_manifest_only_bump_over_the_deployed_artifact_deploys(
    main: Main, tmp_path: Path, capsys
) -> None:
    """The legitimate flows: #1 adds a model (its first version); #2 bumps only its manifest,
    over the artifact the registry publishes (no GitHub call for it); #3 retrains it and #4
    bumps the manifest again, deployed together: #3's diff vouches for the artifact."""
    registry = tmp_path / "registry"
    base = main.head
    first = main.merge(1, lambda repo: write_model(repo, "tulip", "0.1.0", salt="tulip"))
    assert _deploy(main, registry, base, first, ["tulip"]) == 0, capsys.readouterr()
    assert _serving(registry)["tulip"] == ("0.1.0", 1)
    second = main.merge(2, manifest_version("tulip", "0.2.0"))
    assert _deploy(main, registry, first, second, ["tulip"]) == 0, capsys.readouterr()
    assert _serving(registry)["tulip"] == ("0.2.0", 2)
    # the artifact's evidence was the registry: #1 was not looked up again
    assert len(main.gh.server.calls("GET", rf"/repos/{REPO}/commits/{first}/pulls")) == 1
    main.merge(3, bump("tulip", "0.3.0"))
    fourth = main.merge(4, manifest_version("tulip", "0.4.0"))
    assert _deploy(main, registry, second, fourth, ["tulip"]) == 0, capsys.readouterr()
    assert _serving(registry)["tulip"] == ("0.4.0", 4)
    # A README's pull request over the deployed model publishes nothing and refuses nothing.
    fifth = main.merge(5, readme("tulip"))
    assert _deploy(main, registry, fourth, fifth, ["tulip"]) == 0
    assert _serving(registry)["tulip"] == ("0.4.0", 4)
    assert _refusals(registry) == []


def test_a_version_bump_after_a_refused_same_semver_ships_the_artifact_its_pull_request_brought(
    main: Main, tmp_path: Path, capsys
) -> None:
    """#2 retrains iris but forgets to bump metadata.version: refused (a verdict, so the next
    push starts after it). #3 bumps only the version: the artifact was reviewed in #2, outside
    the range and never published, found as the pull request that last changed it."""
    registry = tmp_path / "registry"
    first = main.first_deployed(registry)
    second = main.merge(2, _retrain("iris"))
    assert main.deploy(registry, first, second) == 1
    assert "the version did not increase" in _refusals(registry)[-1]
    third = main.merge(3, manifest_version("iris", "1.2.0"))
    assert main.deploy(registry, second, third) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("1.2.0", 3)
    assert f"deploying {second[:12]}..{third[:12]}" in capsys.readouterr().out


def _retrain(name: str) -> Callable[[Path], object]:
    """New artifact bytes (and the manifest's pin of them), the same metadata.version."""

    def change(repo: Path) -> None:
        version = yaml.safe_load((repo / "models" / name / "model.yaml").read_text())
        write_model(repo, name, version["metadata"]["version"], salt=f"{name}-retrained")

    return change


def test_a_first_deploy_finds_the_approved_pull_request_that_brought_the_artifact(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A registry's first deploy has no version to compare with, and the artifact came in
    before the range: the pull request that last changed it on the branch vouches for it
    when the gate approved it at its merge and its diff changed the artifact to these bytes.
    A model committed with no pull request at all (the repository's first commit) has no
    such evidence: refused."""
    registry = tmp_path / "registry"
    first = main.merge(1, bump("iris", "1.1.0"))  # before the registry was set up
    second = main.merge(2, manifest_version("iris", "1.2.0"))
    assert main.deploy(registry, first, second) == 0, capsys.readouterr()  # (first, second]
    assert _serving(registry)["iris"] == ("1.2.0", 2)
    release = open_registry(registry).release("iris", 1)
    assert release["pull_request"]["number"] == 2  # the approval of the push's own change
    # rose's model.skops is the repository's first commit's, which no pull request brought
    initial = git(main.repo, "rev-list", "--max-parents=0", "HEAD")
    third = main.merge(3, manifest_version("rose", "1.0.1"))
    assert main.deploy(registry, second, third) == 1
    assert "rose" not in _serving(registry)
    reason = _refusals(registry)[-1]
    assert reason.startswith(f"models/rose/model.skops at {third[:12]}: no approved pull request")
    assert f"last changed by {initial[:12]}, which no merged pull request produced" in reason


def test_a_rebase_merged_pull_request_before_the_range_vouches_for_its_artifact(
    main: Main, tmp_path: Path, capsys
) -> None:
    """#1 is rebase-merged: its commit that retrained iris is not its merge commit (a notes
    commit followed). The first deploy's range holds only #2, a version bump: the artifact's
    last change is found as #1's through GitHub's association and the branch's ancestry."""
    registry = tmp_path / "registry"
    base = main.head
    git(main.repo, "checkout", "-q", "-b", "pr1")
    bump("iris", "1.1.0")(main.repo)
    retrained = main.commit("retrain")
    readme("iris")(main.repo)
    notes = main.commit("notes")
    git(main.repo, "checkout", "-q", "main")
    git(main.repo, "merge", "-q", "--ff-only", "pr1")  # rebased onto an unchanged main
    pull = main.pull(1, base, notes)
    pull.add_review("bob", "APPROVED")
    pull.merge(notes, files=tree(main.repo, notes), rebased=[retrained])
    second = main.merge(2, manifest_version("iris", "1.2.0"))
    assert main.deploy(registry, notes, second) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("1.2.0", 2)


def artifact_moved(main: Main, registry: Path, status: str, *, capped: bool = False) -> str:
    """The direct push's artifact moved to m.skops by pull request #3 ("renamed", or "copied":
    the old file stays too), the manifest pointed there at 6.6.7, its files listed as GitHub
    lists them (`capped`: a files list at GitHub's 3,000, so the gate and deploy read the git
    trees instead); deployed, and refused with iris 1.1.0 still serving. The merge commit."""
    _, pushed = _deployed_then_pushed(main, registry)

    def move(repo: Path) -> None:
        folder = repo / "models" / "iris"
        (folder / "m.skops").write_bytes((folder / "model.skops").read_bytes())
        if status == "renamed":
            (folder / "model.skops").unlink()
        doc = yaml.safe_load((folder / "model.yaml").read_text())
        doc["spec"]["artifact"]["path"] = "m.skops"
        doc["metadata"]["version"] = "6.6.7"
        (folder / "model.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    third = main.merge(3, move)
    pull = main.gh.pulls[3]
    pull.files = []  # GitHub lists a rename (or a copy) as one entry with its previous name
    pull.add_file("models/iris/m.skops", status, previous_filename="models/iris/model.skops")
    pull.add_file("models/iris/model.yaml", "modified")
    if capped:  # a list at GitHub's cap: the model's two entries are past its end
        for i in range(3000):
            pull.add_file(f"aa/{i:04}.txt", "added")
        pull.files = pull.files[-3000:]
    assert main.deploy(registry, pushed, third) == 1
    assert _serving(registry)["iris"] == ("1.1.0", 1)
    return third


@pytest.mark.parametrize("capped", [False, True], ids=["listed", "past-3000-files"])
def test_an_artifact_moved_by_a_rename_was_not_reviewed_by_it(
    main: Main, tmp_path: Path, capped: bool
) -> None:
    """A rename shows no bytes: renaming the direct push's artifact (and pointing the manifest
    at the new name) does not make the pull request that renamed it vouch for its bytes. Past
    the files list's 3,000 entries too, where the changes come from the git trees: a rename
    read there as a removal and an addition vouched for the bytes (iris 6.6.7 published)."""
    registry = tmp_path / "registry"
    third = artifact_moved(main, registry, "renamed", capped=capped)
    reason = _refusals(registry)[-1]
    assert reason.startswith(f"models/iris/m.skops at {third[:12]}: no approved pull request")
    assert "last changed by pull request #3, which did not change it to these bytes" in reason
