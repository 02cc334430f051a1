"""`mlops_ci.gitcmd`, the one way the package runs git: a machine without git, or a git that
hangs, is one line and exit 2, never a traceback or a job held until the runner's limit; and a
policy cannot be read without git, so only the built-in trusted types apply."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlops_ci import cli, gitcmd, trust
from mlops_ci.errors import UsageError


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return folder


def _path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git: str | None) -> None:
    """PATH holds one folder, with `git` as this shell script (None: no git at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if git is not None:
        (bin_dir / "git").write_text(f"#!/bin/sh\n{git}\n", encoding="utf-8")
        (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_without_git_plan_is_one_line_and_exit_2(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _path_with(tmp_path, monkeypatch, None)
    assert cli.main(["plan", "--repo", str(repo), "--base", "HEAD"]) == 2
    err = capsys.readouterr().err
    assert "git is not installed" in err and "Traceback" not in err, err
    with pytest.raises(UsageError, match="git is not installed"):
        gitcmd.run(repo, "status")


def test_a_git_that_hangs_is_stopped_and_named(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_with(tmp_path, monkeypatch, "exec /bin/sleep 30")
    monkeypatch.setattr(gitcmd, "TIMEOUT_S", 0.5)
    with pytest.raises(UsageError, match=r"git rev-parse took more than 0.5 s"):
        gitcmd.run(repo, "rev-parse", "HEAD")


def test_without_git_no_policy_is_read_and_nothing_more_is_trusted(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / ".mlops").mkdir()
    (repo / ".mlops" / "policy.yaml").write_text("trusted_types: [collections.OrderedDict]\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "p"],
        check=True,
    )
    assert "OrderedDict" in (trust.policy_text(repo, "HEAD") or "")
    _path_with(tmp_path, monkeypatch, None)
    assert trust.policy_text(repo, "HEAD") is None  # (a FileNotFoundError traceback before)


def test_paths_are_literal_only_when_asked(repo: Path) -> None:
    (repo / "*").mkdir()
    (repo / "*" / "a").write_text("1")
    (repo / "b").write_text("2")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    listed = gitcmd.run(repo, "ls-files", "--", "*", literal=True).stdout.split()
    assert listed == [b"*/a"]
    assert sorted(gitcmd.run(repo, "ls-files", "--", "*").stdout.split()) == [b"*/a", b"b"]
