"""`mlops-ci plan`: which models changed between two commits, as a GitHub Actions job matrix.

A model counts as changed when its manifest changed or any file it pins by digest did (an
artifact-only change counts). Reads git objects directly, so it needs no checkout of either side.
"""

from __future__ import annotations

import json
import posixpath
import re
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

#: git's empty tree: the base of a push that creates a branch.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


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
        if re.fullmatch(r"0{40}|0{64}", ref):
            # A push that creates a branch has no `before`: compare with nothing at all.
            return EMPTY_TREE
        try:
            return (
                self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
            )
        except UsageError:
            raise UsageError(
                f"'{ref}' is not a commit in {self.repo} "
                "(a shallow clone? check out with fetch-depth: 0)"
            ) from None

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

    def blob_id(self, commit: str, path: str) -> str | None:
        """The object id of `path` at `commit`; None where it does not exist."""
        done = subprocess.run(
            ["git", "-C", str(self.repo), "rev-parse", "--verify", "--quiet", f"{commit}:{path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() or None

    def changed_paths(self, base: str, head: str) -> set[str]:
        """Every path added, changed or removed; a rename counts as both of its paths."""
        raw = self.run("diff", "--name-only", "--no-renames", "-z", base, head)
        return {f.decode() for f in raw.split(b"\0") if f}


def _refs(manifest_path: str, data: dict[str, Any]) -> set[str]:
    folder = posixpath.dirname(manifest_path)
    return {posixpath.normpath(posixpath.join(folder, rel)) for rel in referenced_paths(data)}


def _meta(data: dict[str, Any], key: str) -> str:
    return str(data.get("metadata", {}).get(key, ""))


def plan(repo: Path, base: str, head: str = "HEAD") -> Plan:
    """Models are matched across commits by `metadata.name`, not by path: a model moved to
    another folder is the same model (renamed), whatever git's rename detection guesses.
    """
    git = _Git(repo)
    git.run("rev-parse", "--git-dir")  # "not a git repository" before anything else
    base_sha, head_sha = git.commit(base), git.commit(head)
    changed_paths = git.changed_paths(base_sha, head_sha)

    head_manifests = git.manifests(head_sha)
    head_docs = git.read_many(head_sha, head_manifests)
    problems: list[Problem] = []
    heads: dict[str, tuple[str, dict[str, Any], Any]] = {}  # name -> (path, document, nodes)
    touched: list[str] = []
    for path in head_manifests:
        data, errors, node = parse_document(head_docs[path], path)
        if data is None or errors:
            if path in changed_paths:
                problems.extend(errors)
            continue
        heads[_meta(data, "name")] = (path, data, node)
        if path in changed_paths or _refs(path, data) & changed_paths:
            touched.append(_meta(data, "name"))

    # Only manifests the diff touched, or that sit where a changed model sits now, can be the
    # base side of a change: reading just those keeps a plan over 10,000 models cheap.
    base_paths = {p for p in git.manifests(base_sha) if p in changed_paths}
    base_paths |= {heads[name][0] for name in touched}
    bases: dict[str, tuple[str, dict[str, Any]]] = {}
    for path, raw in git.read_many(base_sha, sorted(base_paths)).items():
        data = parse_document(raw, path)[0]
        if data is not None:
            bases[_meta(data, "name")] = (path, data)

    changed: list[ChangedModel] = []
    for name in touched:
        path, data, node = heads[name]
        old_path, old_data = bases.get(name, (None, None))
        if old_path is None or old_data is None:
            status = "added"
        else:
            status = "renamed" if old_path != path else "modified"
        changed.append(
            ChangedModel(
                name=name,
                manifest=path,
                framework=str(data["spec"]["framework"]),
                risk=_meta(data, "risk"),
                version=_meta(data, "version"),
                status=status,
                previous_manifest=old_path,
                previous_version=_meta(old_data, "version") if old_data else None,
            )
        )
        if old_path is None or old_data is None:
            continue
        artifact_changed = _artifact(data) != _artifact(old_data) or (
            git.blob_id(base_sha, _artifact_path(old_data, old_path))
            != git.blob_id(head_sha, _artifact_path(data, path))
        )
        problem = _version_problem(path, data, old_data) if artifact_changed else None
        if problem:
            line, col = locate(node, ["metadata", "version"])
            problems.append(Problem(path, line, col, problem.pointer, problem.message))

    deleted = [
        DeletedModel(name, path, _meta(data, "risk"), _meta(data, "version"))
        for name, (path, data) in sorted(bases.items())
        if name not in heads
    ]
    return Plan(base_sha, head_sha, tuple(changed), tuple(deleted), tuple(problems))


def _artifact(data: dict[str, Any]) -> str:
    return str(data.get("spec", {}).get("artifact", {}).get("sha256"))


def _artifact_path(data: dict[str, Any], manifest_path: str) -> str:
    relative = str(data.get("spec", {}).get("artifact", {}).get("path", ""))
    return posixpath.normpath(posixpath.join(posixpath.dirname(manifest_path), relative))


def _version_problem(path: str, new: dict[str, Any], old: dict[str, Any]) -> Problem | None:
    """A changed artifact must come with a higher metadata.version."""
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
