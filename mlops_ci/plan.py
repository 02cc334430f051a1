"""`mlops-ci plan`: which models changed between two commits, as a GitHub Actions job matrix.

A model counts as changed when its manifest changed or any file it pins by digest did (an
artifact-only change counts). Reads git objects directly, so it needs no checkout of either side.
"""

from __future__ import annotations

import json
import posixpath
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mlops_ci import gha
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, UsageError
from mlops_ci.manifest import (
    MANIFEST_NAMES,
    Problem,
    locate,
    parse_document,
    referenced_paths,
    semver_key,
)


@dataclass(frozen=True)
class ChangedModel:
    name: str
    manifest: str
    framework: str
    risk: str
    version: str
    status: str  # added | modified | renamed
    previous_manifest: str | None = None
    previous_version: str | None = None


@dataclass(frozen=True)
class DeletedModel:
    name: str
    manifest: str
    risk: str
    version: str


@dataclass(frozen=True)
class Plan:
    base: str
    head: str
    changed: tuple[ChangedModel, ...]
    deleted: tuple[DeletedModel, ...]
    problems: tuple[Problem, ...] = field(default=())

    @property
    def any_change(self) -> bool:
        return bool(self.changed or self.deleted)

    def matrix(self) -> dict[str, Any]:
        return {"include": [asdict(m) for m in self.changed]}

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "changed": self.any_change,
            "matrix": self.matrix(),
            "deleted": [asdict(d) for d in self.deleted],
            "problems": [{"path": p.path, **p.to_json()} for p in self.problems],
        }


class _Git:
    """Just enough git plumbing, with errors that say what went wrong."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def run(self, *args: str) -> bytes:
        try:
            done = subprocess.run(
                ["git", "-C", str(self.repo), *args], capture_output=True, check=False
            )
        except FileNotFoundError:
            raise UsageError("git is not installed") from None
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise UsageError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
        return done.stdout

    def commit(self, ref: str) -> str:
        try:
            return (
                self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
            )
        except UsageError:
            raise UsageError(f"'{ref}' is not a commit in {self.repo}") from None

    def manifests(self, commit: str) -> list[str]:
        names = self.run("ls-tree", "-r", "-z", "--name-only", commit).split(b"\0")
        paths = [n.decode() for n in names if n]
        return [p for p in paths if PurePosixPath(p).name in MANIFEST_NAMES]

    def read_many(self, commit: str, paths: list[str]) -> dict[str, bytes]:
        """Blob contents at `commit` in one `git cat-file --batch` call (scales to 10,000 files)."""
        if not paths:
            return {}
        request = "".join(f"{commit}:{p}\n" for p in paths).encode()
        done = subprocess.run(
            ["git", "-C", str(self.repo), "cat-file", "--batch"],
            input=request,
            capture_output=True,
            check=True,
        )
        out, pos, blobs = done.stdout, 0, {}
        for path in paths:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if header[-1] == b"missing":
                continue
            size = int(header[2])
            blobs[path] = out[pos : pos + size]
            pos += size + 1
        return blobs

    def diff(self, base: str, head: str) -> list[tuple[str, str, str | None]]:
        """(status letter, path, previous path for renames) for every changed file."""
        raw = self.run("diff", "--name-status", "-z", "-M", base, head)
        fields = [f.decode() for f in raw.split(b"\0") if f]
        changes: list[tuple[str, str, str | None]] = []
        i = 0
        while i < len(fields):
            status = fields[i][0]
            if status in "RC":
                changes.append((status, fields[i + 2], fields[i + 1]))
                i += 3
            else:
                changes.append((status, fields[i + 1], None))
                i += 2
        return changes


def _refs(manifest_path: str, data: dict[str, Any]) -> set[str]:
    folder = posixpath.dirname(manifest_path)
    return {posixpath.normpath(posixpath.join(folder, rel)) for rel in referenced_paths(data)}


def _meta(data: dict[str, Any], key: str) -> str:
    return str(data.get("metadata", {}).get(key, ""))


def plan(repo: Path, base: str, head: str = "HEAD") -> Plan:
    git = _Git(repo)
    base_sha, head_sha = git.commit(base), git.commit(head)
    changes = git.diff(base_sha, head_sha)
    changed_paths = {path for _, path, _ in changes} | {old for _, _, old in changes if old}
    renamed_from = {path: old for status, path, old in changes if status == "R" and old}
    deleted_paths = {path for status, path, _ in changes if status == "D"}

    head_manifests = git.manifests(head_sha)
    head_docs = git.read_many(head_sha, head_manifests)
    previous = {p: renamed_from.get(p, p) for p in head_manifests}
    base_docs = git.read_many(base_sha, sorted(set(previous.values()) | deleted_paths))

    problems: list[Problem] = []
    changed: list[ChangedModel] = []
    for path in head_manifests:
        data, errors, node = parse_document(head_docs[path], path)
        if data is None or errors:
            if path in changed_paths:
                problems.extend(errors)
            continue
        if path not in changed_paths and not (_refs(path, data) & changed_paths):
            continue
        old_path = previous[path]
        old_raw = base_docs.get(old_path)
        old_data = parse_document(old_raw, old_path)[0] if old_raw is not None else None
        status = "added" if old_data is None else ("renamed" if old_path != path else "modified")
        model = ChangedModel(
            name=_meta(data, "name"),
            manifest=path,
            framework=str(data["spec"]["framework"]),
            risk=_meta(data, "risk"),
            version=_meta(data, "version"),
            status=status,
            previous_manifest=old_path if old_data is not None else None,
            previous_version=_meta(old_data, "version") if old_data else None,
        )
        changed.append(model)
        if old_data is not None:
            problem = _version_problem(path, data, old_data, _refs(path, data) & changed_paths)
            if problem:
                line, col = locate(node, ["metadata", "version"])
                problems.append(Problem(path, line, col, problem.pointer, problem.message))

    deleted = []
    for path in sorted(p for p in deleted_paths if PurePosixPath(p).name in MANIFEST_NAMES):
        raw = base_docs.get(path)
        data = parse_document(raw, path)[0] if raw is not None else None
        deleted.append(
            DeletedModel(
                name=_meta(data, "name") if data else PurePosixPath(path).parent.name,
                manifest=path,
                risk=_meta(data, "risk") if data else "",
                version=_meta(data, "version") if data else "",
            )
        )
    return Plan(base_sha, head_sha, tuple(changed), tuple(deleted), tuple(problems))


def _version_problem(
    path: str, new: dict[str, Any], old: dict[str, Any], changed_refs: set[str]
) -> Problem | None:
    """A changed artifact must come with a higher metadata.version."""
    artifact_changed = (
        new["spec"]["artifact"].get("sha256")
        != old.get("spec", {}).get("artifact", {}).get("sha256")
        or posixpath.normpath(
            posixpath.join(posixpath.dirname(path), new["spec"]["artifact"]["path"])
        )
        in changed_refs
    )
    if not artifact_changed:
        return None
    new_v, old_v = _meta(new, "version"), _meta(old, "version")
    try:
        if semver_key(new_v) > semver_key(old_v):
            return None
    except ValueError:
        return None  # validate reports a malformed version
    return Problem(
        path,
        None,
        None,
        "/metadata/version",
        f"metadata.version: the artifact changed but the version did not increase "
        f"({old_v} -> {new_v}); raise it above {old_v}",
    )


def _text(result: Plan) -> str:
    if not result.any_change:
        return f"no model changed between {result.base[:12]} and {result.head[:12]}"
    lines = [
        f"{len(result.changed)} changed, {len(result.deleted)} deleted "
        f"({result.base[:12]}..{result.head[:12]})"
    ]
    for m in result.changed:
        was = (
            f" (was {m.previous_version})"
            if m.previous_version and m.previous_version != m.version
            else ""
        )
        lines.append(f"  {m.status:<9} {m.name} {m.version}{was}  {m.manifest}")
    lines.extend(f"  deleted   {d.name} {d.version}  {d.manifest}" for d in result.deleted)
    lines.extend(f"error: {p}" for p in result.problems)
    return "\n".join(lines)


def main(repo: Path, *, base: str, head: str = "HEAD", fmt: str = "json") -> int:
    if not repo.is_dir():
        raise UsageError(f"{repo}: no such folder")
    result = plan(repo, base, head)
    if fmt == "json":
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(_text(result))
    if fmt == "github":
        gha.set_output("matrix", json.dumps(result.matrix(), separators=(",", ":")))
        gha.set_output("changed", "true" if result.changed else "false")
        gha.set_output(
            "deleted", json.dumps([asdict(d) for d in result.deleted], separators=(",", ":"))
        )
        for p in result.problems:
            gha.annotation("error", p.message, file=p.path, line=p.line, title="mlops-ci plan")
        gha.write_summary("### mlops-ci plan\n\n```\n" + _text(result) + "\n```")
    return EXIT_VERDICT if result.problems else EXIT_OK
