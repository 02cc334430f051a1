"""A second review of deploy's shortcuts: a model whose files are byte for byte a recorded
version is not judged again (`deploy_push._Held`), and a Git LFS pointer stands for the content
it names (`digest.content_sha256`). Each defect's test failed before its fix: a direct push
that left a model's files as deployed was skipped unrecorded, or let a later approved change
publish past it; a manifest text like `2027-02-30` stopped every deploy on an internal error; a
pointer with extensions counted as its oid's content; a published manifest holding that text
failed its smoke test; an LFS artifact left a pointer by the publish job's checkout was refused
as a verdict (its approved change dropped for good). The plain-text pointer is an attempt that
fails (the deploy job's own checkout refuses it).

Real git repositories in tmp_path, tests/ghserver.py as GitHub, a folder registry, the real iris
model (the `Main` of tests/test_deploy_range.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from deploy_models import git, write_build
from test_deploy_range import RUNS, Main, _serving, bump, new_main

from mlops_ci import audit, deploy_range, digest
from mlops_ci.registry import open_registry


@pytest.fixture
def main(ghserver, monkeypatch, tmp_path: Path) -> Main:
    return new_main(ghserver, monkeypatch, tmp_path)


def _records(registry: Path, action: str) -> list[dict]:
    return [r for r in audit.records(open_registry(registry)) if r["action"] == action]


def _deploy(main: Main, registry: Path, before: str, after: str, *, unbuilt: str = "") -> int:
    """`Main.deploy`, its builds written from manifests the test's YAML reader can read too."""
    from mlops_ci import cli

    builds = main.tmp / f"builds-{after[:8]}-{unbuilt}"
    for name in {"iris", "wine", "rose"} - {unbuilt}:
        text = (main.repo / "models" / name / "model.yaml").read_text()
        plain = main.tmp / f"{name}.yaml"
        plain.write_text(text.replace("2027-02-30", "row 0"))
        write_build(builds / name, plain)
    return cli.main(
        [
            *("deploy", "--registry", str(registry), "--builds", str(builds)),
            *("--repo", str(main.repo), "--sha", after, "--base", before),
            *("--environment", "staging"),
        ]
    )


def dated(name: str, version: str) -> Callable[[Path], object]:
    """A version bump whose first test case is named `2027-02-30`: text to the manifest's reader
    (it looks like a date but is none), and a valid manifest."""

    def change(repo: Path) -> None:
        bump(name, version)(repo)
        path = repo / "models" / name / "model.yaml"
        text = path.read_text()
        assert "name: row 0" in text
        path.write_text(text.replace("name: row 0", "name: 2027-02-30", 1))

    return change


def test_a_direct_push_of_a_manifest_with_a_text_like_a_date_is_refused_not_an_error(
    main: Main, tmp_path: Path, capsys
) -> None:
    """`_Held` read each commit's manifest of the range with yaml.safe_load, which raises
    ValueError (not a YAMLError) on `2027-02-30`, text to validate, plan and the gate. A direct
    push of such a manifest then stopped the deploy on an internal error instead of refusing
    iris; an error is no verdict, so every later push judged that commit again and stopped the
    same way: rose's approved change, and every other model's, never deployed again."""
    registry = tmp_path / "registry"
    first = main.merge(1, bump("iris", "1.1.0"))
    assert _deploy(main, registry, git(main.repo, "rev-parse", f"{first}^"), first) == 0
    pushed = main.push(dated("iris", "6.6.6"))
    assert _deploy(main, registry, first, pushed) == 1, capsys.readouterr()
    [refused] = _records(registry, "refused")
    assert "direct push" in refused["reason"] and refused["model"] == "iris", refused
    third = main.merge(3, bump("rose", "1.1.0"))
    assert _deploy(main, registry, pushed, third) == 0, capsys.readouterr()
    assert _serving(registry) == {"iris": ("1.1.0", 1), "rose": ("1.1.0", 3)}


def test_an_approved_manifest_with_a_text_like_a_date_deploys(
    main: Main, tmp_path: Path, capsys
) -> None:
    """deploy._deployed_manifest read `<n>/model.yaml` with yaml's safe loader and caught only
    YAMLError: the smoke test of a published manifest holding `2027-02-30` (text to validate)
    raised ValueError, and so would a re-run and a rollback."""
    registry = tmp_path / "registry"
    first = main.merge(1, bump("iris", "1.1.0"))
    assert _deploy(main, registry, git(main.repo, "rev-parse", f"{first}^"), first) == 0
    second = main.merge(2, dated("iris", "1.2.0"))
    assert _deploy(main, registry, first, second) == 0, capsys.readouterr()
    assert _serving(registry)["iris"] == ("1.2.0", 2)


def readme(repo: Path) -> None:
    (repo / "models" / "iris" / "README.md").write_text("pushed straight to main\n")


def test_a_direct_push_that_leaves_a_model_s_files_as_deployed_is_refused_on_the_record(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A direct push changes iris's folder (its README) and leaves model.yaml and model.skops
    byte for byte as version 1. `_Held` took the push for a commit "judged when that version
    was published" (it was pushed after it) and skipped iris: exit 0, no refusal on the
    record, no failed Deployment: a push that bypassed review left no trace in the audit log."""
    registry = tmp_path / "registry"
    first = main.first_deployed(registry)
    pushed = main.push(readme)
    assert main.deploy(registry, first, pushed) == 1, capsys.readouterr()
    [refused] = _records(registry, "refused")
    assert refused["model"] == "iris" and "direct push" in refused["reason"], refused
    assert f"no merged pull request produced {pushed[:12]}" in refused["reason"]
    assert main.gh.deployments[-1]["statuses"][-1]["state"] == "failure"


def test_a_direct_push_of_a_plain_text_lfs_pointer_naming_the_deployed_artifact_is_refused(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A direct push replaces iris's model.skops with the text of a Git LFS pointer whose oid
    is the deployed artifact's sha256, committed as plain text (no .gitattributes names it, so
    every checkout holds that text). Its oid is version 1's artifact digest, so `_Held` took
    the commit for version 1 byte for byte; what refuses it first is the deploy job's own
    checkout: the manifest's pin does not match the file there (an attempt that fails: it is
    refused whatever `_Held` says)."""
    registry = tmp_path / "registry"
    first = main.first_deployed(registry)
    deployed = open_registry(registry).release("iris", 1)["artifact"]["sha256"]

    def fake_pointer(repo: Path) -> None:
        (repo / "models" / "iris" / "model.skops").write_text(
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{deployed}\nsize 7\n"
        )

    pushed = main.push(fake_pointer)
    assert main.deploy(registry, first, pushed) == 1, capsys.readouterr()
    [refused] = _records(registry, "refused")
    assert refused["model"] == "iris", refused
    assert "'model.skops' is a Git LFS pointer, not the file" in refused["reason"]
    assert _serving(registry)["iris"] == ("1.1.0", 1)


def test_an_lfs_artifact_left_a_pointer_by_the_publish_checkout_is_an_error_not_a_verdict(
    ghserver, monkeypatch, tmp_path: Path, capsys
) -> None:
    """The publish job's checkout held each LFS file as its pointer (the workflow checked it
    out without `lfs`), and deploy loads each changed manifest with its file checks: the model
    was refused as a verdict, and its approved change dropped for good. Now the publish job
    checks out LFS files as the `lfs` input says, and a pointer of an LFS-tracked file left in
    the checkout is an error (exit 2, not processed): the next run, with LFS files, deploys it."""
    from test_deploy_reviewed import _deploy as deploy_names
    from test_lfs import _add_lfs_model, _with_fake_lfs

    main = new_main(ghserver, monkeypatch, tmp_path)
    _with_fake_lfs(main.repo, tmp_path)
    base = main.head
    first = main.merge(1, _add_lfs_model)
    lfs_repo, registry = main.repo, tmp_path / "registry"
    clone = tmp_path / "publish-checkout"
    git(tmp_path, "clone", "-q", str(main.repo), str(clone))  # no LFS filter: pointers
    assert (clone / "models" / "tulip" / "model.skops").read_bytes().startswith(b"version ")
    main.repo = clone
    assert deploy_names(main, registry, base, first, ["tulip"]) == 1  # not deployed
    assert "is a Git LFS pointer" in capsys.readouterr().out
    [error] = _records(registry, "refused")
    assert error["reason"].startswith(deploy_range.ERROR_PREFIX), error
    main.repo = lfs_repo  # the next run's checkout fetched LFS files: the range is judged again
    assert deploy_names(main, registry, base, first, ["tulip"]) == 0, capsys.readouterr()
    assert _serving(registry)["tulip"] == ("0.1.0", 1)


def test_a_pointer_with_an_extension_stands_for_no_known_content() -> None:
    """git-lfs's spec: a pointer's `ext-<n>-<name>` lines name the extensions its content went
    through on `git add`; its oid is the digest of the LAST one's output, and a checkout holds
    what their smudge filters make of that object (or fails where they are not configured).
    content_sha256 took that oid for the file's digest, so a pointer with an extension naming a
    deployed artifact's sha256 counted as the deployed artifact (the registry's evidence). It
    is hardening: the build's digest check of the checked-out file still refuses other bytes."""
    deployed = hashlib.sha256(b"weights").hexdigest()
    text = (
        "version https://git-lfs.github.com/spec/v1\n"
        f"ext-0-crypt sha256:{'1' * 64}\noid sha256:{deployed}\nsize 7\n"
    ).encode()
    assert digest.lfs_pointer(text) == digest.LfsPointer(deployed, 7)  # still read as one
    assert digest.content_sha256(text) == hashlib.sha256(text).hexdigest()
    plain = text.replace(f"ext-0-crypt sha256:{'1' * 64}\n".encode(), b"")
    assert digest.content_sha256(plain) == deployed


def test_a_version_counts_as_judging_only_commits_this_repository_s_deploy_of_it_covered(
    main: Main, tmp_path: Path
) -> None:
    """`_Held` drops a model's commits up to one that holds a version's files only when that
    version was published by a deploy of THIS repository (its run URL; another repository may
    share the registry, and its pull requests are not this one's), from GitHub (a local deploy
    judges nothing), of a commit of the pushed one's history (not force-pushed away)."""
    from mlops_ci.deploy_push import _Held
    from mlops_ci.reverify import ModelFiles

    first = main.merge(1, bump("iris", "1.1.0"))
    files = ModelFiles("iris", "models/iris/model.yaml", "models/iris/model.skops")
    held = _Held(open_registry(tmp_path / "registry"), main.repo, files, first, RUNS)
    ours = {"source": "github", "commit": first, "run_url": f"{RUNS}7"}
    assert held._published_at(ours) == first
    other = "https://github.example/acme/other/actions/runs/7"
    assert held._published_at(ours | {"run_url": other}) is None
    assert held._published_at(ours | {"source": "local"}) is None
    assert held._published_at(ours | {"commit": "f" * 40}) is None  # not in the clone
    assert held._published_at(ours | {"commit": "--all"}) is None
    later = main.merge(2, bump("iris", "1.2.0"))
    assert held._published_at(ours | {"commit": later}) is None  # not of the pushed history


def test_a_direct_push_before_an_approved_change_still_refuses_the_model(
    main: Main, tmp_path: Path, capsys
) -> None:
    """The direct push of the test above, then an approved pull request that bumps iris, in
    one range: each commit that changed iris must be an approved pull request's. `_Held` took
    the push for judged (it holds version 1's files) and judged #3 alone: iris 1.2.0 published,
    the push never refused nor recorded."""
    registry = tmp_path / "registry"
    first = main.first_deployed(registry)
    pushed = main.push(readme)
    third = main.merge(3, bump("iris", "1.2.0"))
    assert main.deploy(registry, first, third) == 1, capsys.readouterr()
    [refused] = _records(registry, "refused")
    assert f"no merged pull request produced {pushed[:12]}" in refused["reason"], refused
    assert _serving(registry)["iris"] == ("1.1.0", 1)
