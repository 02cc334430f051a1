"""A push deploys everything merged since the last deploy the registry records, not only its own
`before..after`: GitHub keeps one pending run per concurrency group and cancels it when a newer
push arrives, so with pushes A, B, C arriving while A's deploy runs, B's run never starts, and
C's own range leaves B's models undeployed, silently (shown to fire first).

Real git repositories in tmp_path (pull requests merged with `--no-ff`), tests/ghserver.py as
GitHub, a folder registry, the real iris model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from deploy_models import git, tree, write_build, write_model
from ghserver import fake_sha

from mlops_ci import audit, deploy, deploy_range
from mlops_ci.registry import open_registry

REPO = "acme/models"
RUNS = f"https://github.example/{REPO}/actions/runs/"


class Main:
    """A model repository's main branch and its pull requests on the GitHub server."""

    def __init__(self, tmp_path: Path, ghserver) -> None:
        self.tmp = tmp_path
        self.repo = tmp_path / "repo"
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        for name in ("iris", "wine", "rose"):
            write_model(self.repo, name, "1.0.0", salt=name)
        self.commit("three models")
        self.gh = ghserver.add_repo(REPO)
        self.gh.permissions["bob"] = "write"

    def commit(self, message: str) -> str:
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", message)
        return git(self.repo, "rev-parse", "HEAD")

    @property
    def head(self) -> str:
        return git(self.repo, "rev-parse", "HEAD")

    def merge(
        self,
        number: int,
        change: Callable[[Path], object],
        *,
        approved: bool = True,
        approvers: Sequence[str] = ("bob",),
    ) -> str:
        """A pull request made of `change`, approved by `approvers` (or not reviewed) and
        merged with a merge commit."""
        base = self.head
        git(self.repo, "checkout", "-q", "-b", f"pr{number}")
        change(self.repo)
        head = self.commit(f"change {number}")
        git(self.repo, "checkout", "-q", "main")
        git(self.repo, "merge", "-q", "--no-ff", "-m", f"Merge pull request #{number}", head)
        merged = self.head
        pull = self.pull(number, base, head)
        for login in approvers if approved else ():
            pull.add_review(login, "APPROVED")
        pull.merge(merged, files=tree(self.repo, merged))
        return merged

    def pull(self, number: int, base: str, head: str) -> Any:
        """Pull request `number` on the GitHub server: carol's, from `base` to the commit
        `head` of the clone (its files as GitHub shows them)."""
        return self.gh.add_pull(
            number,
            author="carol",
            base_files=tree(self.repo, base),
            head_files=tree(self.repo, head),
            head_sha=fake_sha(f"pr{number}-head"),
            base_sha=base,
        )

    def first_deployed(self, registry: Path) -> str:
        """#1 bumps iris to 1.1.0, merged and deployed (the registry's first record); its
        merge commit."""
        first = self.merge(1, bump("iris", "1.1.0"))
        assert self.deploy(registry, git(self.repo, "rev-parse", f"{first}^"), first) == 0
        return first

    def push(self, change: Callable[[Path], object]) -> str:
        """A commit pushed straight to main (no pull request)."""
        change(self.repo)
        return self.commit("direct push")

    def deploy(self, registry: Path, before: str, after: str, *, unbuilt: str = "") -> int:
        from mlops_ci import cli

        builds = self.tmp / f"builds-{after[:8]}-{unbuilt}"
        for name in {"iris", "wine", "rose"} - {unbuilt}:
            write_build(builds / name, self.repo / "models" / name / "model.yaml")
        return cli.main(
            [
                *("deploy", "--registry", str(registry), "--builds", str(builds)),
                *("--repo", str(self.repo), "--sha", after, "--base", before),
                *("--environment", "staging"),
            ]
        )


def bump(name: str, version: str) -> Callable[[Path], object]:
    return lambda repo: write_model(repo, name, version, salt=f"{name}{version}")


def new_main(ghserver, monkeypatch, tmp_path: Path) -> Main:
    """A fresh repository and GitHub, with the variables of a run of REPO's workflow."""
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
    monkeypatch.setenv("GITHUB_RUN_ID", "99")
    return Main(tmp_path, ghserver)


@pytest.fixture
def main(ghserver, monkeypatch, tmp_path: Path) -> Main:
    return new_main(ghserver, monkeypatch, tmp_path)


def _serving(registry: Path) -> dict[str, tuple[str, int | None]]:
    """model -> (semver serving, the pull request that approved it)."""
    reg = open_registry(registry)
    out = {}
    for name in reg.models():
        release = reg.release(name, reg.serving_version(name))
        out[name] = (release["version"], (release.get("pull_request") or {}).get("number"))
    return out


def _queued(main: Main, registry: Path) -> tuple[str, str, str]:
    """#1 (iris 1.1.0) deployed; then #2 (wine 1.1.0) and #3 (rose 1.1.0) merged while it ran:
    #2's run was cancelled by #3's. Returns (#1's, #2's, #3's merge commit)."""
    first = main.first_deployed(registry)
    second = main.merge(2, bump("wine", "1.1.0"))
    third = main.merge(3, bump("rose", "1.1.0"))
    return first, second, third


def test_the_push_s_own_range_drops_the_models_of_a_cancelled_run(
    main: Main, tmp_path: Path, monkeypatch, capsys
) -> None:
    """What deploy did before: #3's run planned `before..after` (#2's merge..#3's) only."""
    registry = tmp_path / "registry"
    _, second, third = _queued(main, registry)
    monkeypatch.setattr(deploy_range, "_scan", lambda *a: (None, None))  # the naive start
    assert main.deploy(registry, second, third) == 0
    served = _serving(registry)
    assert served == {"iris": ("1.1.0", 1), "rose": ("1.1.0", 3)}  # wine 1.1.0: never deployed
    assert "wine" not in served
    assert "the push's own change only" in capsys.readouterr().out


def test_a_push_deploys_what_a_cancelled_run_never_did(main: Main, tmp_path: Path, capsys) -> None:
    registry = tmp_path / "registry"
    first, second, third = _queued(main, registry)
    assert main.deploy(registry, second, third) == 0, capsys.readouterr()
    assert f"deploying {first[:12]}..{third[:12]}" in capsys.readouterr().out
    # each model with the pull request that approved its bytes
    assert _serving(registry) == {
        "iris": ("1.1.0", 1),
        "wine": ("1.1.0", 2),
        "rose": ("1.1.0", 3),
    }
    reg = open_registry(registry)
    assert audit.verify(reg).ok
    deployments = main.gh.deployments
    assert sorted(d["payload"]["model"] for d in deployments) == ["iris", "rose", "wine"]
    assert all(d["statuses"][-1]["state"] == "success" for d in deployments)
    # Re-running the same commit changes nothing.
    log = reg.read_bytes(audit.LOG_KEY)
    assert main.deploy(registry, second, third) == 0
    assert reg.read_bytes(audit.LOG_KEY) == log
    # The next push starts after it.
    fourth = main.merge(4, bump("iris", "1.2.0"))
    assert main.deploy(registry, third, fourth) == 0
    assert f"deploying {third[:12]}..{fourth[:12]}" in capsys.readouterr().out


def test_a_model_whose_build_failed_waits_for_the_next_push_alone(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A build that failed (an error, not a verdict) holds back neither the other models nor
    its own deploy for good: the next push covers it again."""
    registry = tmp_path / "registry"
    _, second, third = _queued(main, registry)
    assert main.deploy(registry, second, third, unbuilt="wine") == 2
    assert "no build of wine" in capsys.readouterr().err
    assert _serving(registry) == {"iris": ("1.1.0", 1), "rose": ("1.1.0", 3)}
    [refused] = [r for r in audit.records(open_registry(registry)) if r["action"] == "refused"]
    assert refused["model"] == "wine" and refused["pull_request"]["number"] == 2
    assert refused["reason"].startswith(deploy_range.ERROR_PREFIX)
    fourth = main.merge(4, bump("iris", "1.2.0"))
    assert main.deploy(registry, third, fourth) == 0, capsys.readouterr()
    assert _serving(registry)["wine"] == ("1.1.0", 2)


def test_a_cancelled_run_re_run_after_a_later_deploy_changes_nothing(
    main: Main, tmp_path: Path, capsys
) -> None:
    """#2's run, cancelled, is re-run by hand after #3's deployed wine 1.2.0 (and #2's changes
    with it): judged alone, its range would publish wine 1.1.0 over 1.2.0."""
    registry = tmp_path / "registry"
    first = main.first_deployed(registry)
    second = main.merge(2, bump("wine", "1.1.0"))
    third = main.merge(3, bump("wine", "1.2.0"))
    assert main.deploy(registry, second, third) == 0
    reg = open_registry(registry)
    log = reg.read_bytes(audit.LOG_KEY)
    git(main.repo, "checkout", "-q", second)  # the re-run checks out its own commit
    assert main.deploy(registry, first, second) == 0
    assert f"{third[:12]}, a later commit, was deployed already" in capsys.readouterr().out
    assert reg.read_bytes(audit.LOG_KEY) == log
    assert _serving(registry)["wine"] == ("1.2.0", 3)


def test_a_direct_push_in_the_range_refuses_its_model_only(
    main: Main, tmp_path: Path, capsys
) -> None:
    registry = tmp_path / "registry"
    main.first_deployed(registry)
    pushed = main.push(bump("wine", "6.6.6"))  # its run was cancelled by the next push
    third = main.merge(3, bump("rose", "1.1.0"))
    assert main.deploy(registry, pushed, third) == 1
    assert "wine" not in _serving(registry)
    assert _serving(registry)["rose"] == ("1.1.0", 3)
    reg = open_registry(registry)
    refused = [r for r in audit.records(reg) if r["action"] == "refused"]
    assert [r["model"] for r in refused] == ["wine"]
    assert "direct push" in refused[0]["reason"] and pushed[:12] in refused[0]["reason"]
    failed = [d for d in main.gh.deployments if d["statuses"][-1]["state"] == "failure"]
    assert [d["payload"]["models"] for d in failed] == [["wine"]]
    # The refusal is a verdict on the record: the next push does not judge that range again.
    fourth = main.merge(4, bump("iris", "1.2.0"))
    assert main.deploy(registry, third, fourth) == 0, capsys.readouterr()
    assert len([r for r in audit.records(reg) if r["action"] == "refused"]) == 1


def test_an_unapproved_admin_merge_in_the_range_is_refused(main: Main, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    main.first_deployed(registry)
    second = main.merge(2, bump("wine", "1.1.0"), approved=False)  # branch protection bypassed
    third = main.merge(3, bump("rose", "1.1.0"))
    assert main.deploy(registry, second, third) == 1
    served = _serving(registry)
    assert "wine" not in served and served["rose"] == ("1.1.0", 3)
    [refused] = [r for r in audit.records(open_registry(registry)) if r["action"] == "refused"]
    assert refused["model"] == "wine"
    assert "#2 was merged without the approvals" in refused["reason"]


def test_a_model_changed_by_an_unapproved_merge_and_then_an_approved_one_is_refused(
    main: Main, tmp_path: Path
) -> None:
    """The last pull request's reviewers saw its own diff, not the admin merge's bytes before
    it: every pull request that changed the model must be approved."""
    registry = tmp_path / "registry"
    main.first_deployed(registry)
    second = main.merge(2, bump("wine", "1.1.0"), approved=False)
    readme = lambda repo: (repo / "models/wine/README.md").write_text("notes\n")  # noqa: E731
    third = main.merge(3, readme)
    assert main.deploy(registry, second, third) == 1
    assert "wine" not in _serving(registry)


def test_a_change_reverted_within_the_range_deploys_nothing_for_it(
    main: Main, tmp_path: Path, capsys
) -> None:
    registry = tmp_path / "registry"
    main.first_deployed(registry)
    second = main.merge(2, bump("wine", "1.1.0"))

    def revert_and_bump(repo: Path) -> None:
        write_model(repo, "wine", "1.0.0", salt="wine")  # #2 reverted: the bytes of 1.0.0
        write_model(repo, "rose", "1.1.0", salt="rose1.1.0")

    third = main.merge(3, revert_and_bump)
    assert main.deploy(registry, second, third) == 0, capsys.readouterr()
    served = _serving(registry)
    assert "wine" not in served  # net, wine did not change: wine 1.1.0 never serves
    assert served["rose"] == ("1.1.0", 3)
    assert [r["action"] for r in audit.records(open_registry(registry))] == ["deploy", "deploy"]


def test_the_last_pull_request_that_changed_a_model_binds_its_bytes(
    main: Main, tmp_path: Path
) -> None:
    first = main.merge(1, bump("iris", "1.1.0"))
    main.merge(2, bump("wine", "1.1.0"))
    third = main.merge(3, bump("wine", "1.2.0"))
    registries = tmp_path / "a", tmp_path / "b"
    for registry in registries:
        assert main.deploy(registry, git(main.repo, "rev-parse", f"{first}^"), first) == 0
    assert main.deploy(registries[0], first, third) == 0
    assert _serving(registries[0])["wine"] == ("1.2.0", 3)
    # What landed differs from #3's approved head (though #2 and #3 are both approved).
    main.gh.trees[main.gh.pulls[3].head_sha]["models/wine/model.skops"] += b"approved"
    assert main.deploy(registries[1], first, third) == 1
    assert "wine" not in _serving(registries[1])
    [refused] = [r for r in audit.records(open_registry(registries[1])) if r["model"] == "wine"]
    assert "not the file approved in pull request #3" in refused["reason"]


# --- the start: what the registry's log says was processed ----------------------------------


def _record(reg, commit: str, action: str = "deploy", reason: str = "", run: str = RUNS) -> None:
    prov = deploy.Provenance(source="github", actor="ci", commit=commit, run_url=f"{run}1")
    if action == "refused":
        deploy.refuse(reg, ["iris"], reason, prov)
    else:
        fields = deploy._record(action, "iris", "1.0.0", 1, prov)
        audit.append(reg, fields)


def test_the_start_is_the_nearest_processed_ancestor_of_this_repository(
    main: Main, tmp_path: Path
) -> None:
    a = main.merge(1, bump("iris", "1.1.0"))
    b = main.merge(2, bump("wine", "1.1.0"))
    c = main.merge(3, bump("rose", "1.1.0"))
    reg = open_registry(tmp_path / "registry")
    assert deploy_range.last_processed(reg, main.repo, c, RUNS) is None  # a first deploy
    _record(reg, a)
    assert deploy_range.last_processed(reg, main.repo, c, RUNS) == a
    # An error is no verdict: b's run failed to reach GitHub, so b was not processed.
    _record(reg, b, "refused", f"{deploy_range.ERROR_PREFIX} cannot reach the API")
    assert deploy_range.last_processed(reg, main.repo, c, RUNS) == a
    # Another repository's record (sharing the registry) and the pushed commit itself (a
    # re-run judges its range again) do not count; a verdict does.
    _record(reg, b, run="https://github.example/acme/other/actions/runs/")
    _record(reg, c)
    assert deploy_range.last_processed(reg, main.repo, c, RUNS) == a
    _record(reg, b, "refused", "pull request #2 was merged without the approvals it needs")
    assert deploy_range.last_processed(reg, main.repo, c, RUNS) == b
    # A commit that is not an ancestor (force-pushed away, or unknown here) is passed over.
    _record(reg, fake_sha("gone"))
    assert deploy_range.last_processed(reg, main.repo, c, RUNS) == b
    start = deploy_range.start(reg, main.repo, c, b, RUNS)
    assert (start.commit, start.recorded) == (b, True)


def test_with_nothing_recorded_a_rewritten_history_deploys_nothing(
    main: Main, tmp_path: Path, capsys
) -> None:
    """A force-push with no recorded ancestor: the range cannot be known; nothing is guessed."""
    old = main.merge(1, bump("iris", "1.1.0"))
    git(main.repo, "reset", "-q", "--hard", f"{old}^")
    new = main.push(bump("wine", "2.0.0"))
    registry = tmp_path / "registry"
    assert main.deploy(registry, old, new) == 2
    assert "rewrote the branch's history" in capsys.readouterr().err
    assert open_registry(registry).models() == []


def test_plan_with_the_registry_plans_the_same_range(main: Main, tmp_path: Path, capsys) -> None:
    """The build job converts what publish will deploy: plan starts where deploy does."""
    from mlops_ci import cli

    registry = tmp_path / "registry"
    _, second, third = _queued(main, registry)
    args = ["plan", "--repo", str(main.repo), "--base", second, "--head", third]
    capsys.readouterr()
    assert cli.main([*args, "--format", "json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)["matrix"]["include"]] == ["rose"]
    assert cli.main([*args, "--registry", str(registry), "--format", "json"]) == 0
    out = capsys.readouterr()
    assert [m["name"] for m in json.loads(out.out)["matrix"]["include"]] == ["rose", "wine"]
    assert "last commit deployed" in out.err


def test_a_start_far_back_in_the_log_is_found_on_every_backend(
    registry_uri: str, tmp_path: Path, monkeypatch
) -> None:
    """The log is read from its end; on S3 that end is its last two segments, so a start
    further back (other repositories' deploys since) needs the rest of the log, read then."""
    from mlops_ci import registry

    monkeypatch.setattr(registry, "SEGMENT_LINES", 3)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commits = []
    for i in range(2):
        (repo / "f").write_text(str(i))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", str(i))
        commits.append(git(repo, "rev-parse", "HEAD"))
    reg = open_registry(registry_uri)
    _record(reg, commits[0])
    for i in range(10):  # another repository's deploys, into the same registry
        _record(reg, fake_sha(f"other{i}"), run="https://github.example/acme/other/actions/runs/")
    assert deploy_range.last_processed(reg, repo, commits[1], RUNS) == commits[0]


def test_plan_warns_and_plans_the_push_s_own_change_when_the_registry_cannot_be_read(
    main: Main, tmp_path: Path, capsys
) -> None:
    from mlops_ci import cli

    registry = tmp_path / "registry"
    _, second, third = _queued(main, registry)
    not_a_registry = tmp_path / "file"
    not_a_registry.write_text("")
    args = ["plan", "--repo", str(main.repo), "--base", second, "--head", third]
    capsys.readouterr()
    assert cli.main([*args, "--registry", str(not_a_registry), "--format", "github"]) == 0
    out = capsys.readouterr()
    assert "::warning title=mlops-ci plan::cannot read the registry" in out.out
    assert "the read-only key" in out.err
    assert "1 changed" in out.out and "rose 1.1.0" in out.out and "wine" not in out.out


def test_a_lasting_error_in_one_model_does_not_make_every_push_judge_the_whole_range(
    main: Main, tmp_path: Path, capsys
) -> None:
    """wine's build keeps failing, so every push's range starts before wine's pull request and
    holds every pull request merged since. A model whose files at the pushed commit are byte
    for byte a version the registry holds publishes nothing whoever approved them: it is not
    judged again. Before, each push judged every pull request of the range again (about 10
    GitHub calls each): with GITHUB_TOKEN's 1,000 requests an hour, some 80 to 100 pull
    requests behind one broken model made every deploy fail."""
    registry = tmp_path / "registry"
    first = main.first_deployed(registry)
    calls: list[int] = []
    before, after = first, main.merge(2, bump("wine", "1.1.0"))
    for i in range(3, 9):
        start = len(main.gh.server.calls())
        assert main.deploy(registry, before, after, unbuilt="wine") == 2
        calls.append(len(main.gh.server.calls()) - start)
        name = ("iris", "rose")[i % 2]
        before, after = after, main.merge(i, bump(name, f"1.{i}.0"))
    capsys.readouterr()
    assert _serving(registry) == {"iris": ("1.6.0", 6), "rose": ("1.7.0", 7)}
    # Each push judges wine's pull request and its own, not the ones deployed before it.
    assert calls[1:] == [calls[1]] * (len(calls) - 1), calls
