"""`mlops-ci plan`: which models changed between two commits, as a GitHub Actions job matrix.

A model counts as changed when its manifest changed or any other file in its folder did (an
artifact-only change counts): `changes.touched_models`, the rule the gate applies too. Reads git
objects by id, and only the manifests of touched folders, so it needs no checkout of either side
and its cost follows the change, not the repository.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_ci import gha, gitcmd
from mlops_ci.changes import FileChange, Touched, candidate_folders, touched_models
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, UsageError
from mlops_ci.manifest import (
    EXTRA_BY_FRAMEWORK,
    MANIFEST_NAMES,
    Problem,
    locate,
    parse_document,
    safe_yaml,
    semver_key,
)
from mlops_ci.report import escape

#: How a problem of a name two manifests claim ends (deploy tells it from the others by it).
NAMES_UNIQUE = "names must be unique in the repository"
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
    extras: str = ""  # the mlops-ci extra its model job installs (torch for pytorch, none for onnx)


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

    def environments(self) -> list[str]:
        """The distinct extras of the changed models: the environments CI installs once."""
        return sorted({m.extras for m in self.changed})

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

    def run(self, *args: str, stdin: bytes | None = None) -> bytes:
        # literal: a diff's paths are paths, never patterns (a folder may be named `*`)
        return gitcmd.output(self.repo, *args, stdin=stdin, literal=True)

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

    def diff(self, base: str, head: str) -> tuple[list[FileChange], _Ids, _Ids, list[str]]:
        """The changed paths, the blob ids of each at base and at head (where present), and
        the manifests among them whose path is not UTF-8 (escaped: git's bytes, shown).

        No rename detection: plan matches models by name, which is where renames live.
        """
        raw = self.run("diff", "--raw", "-z", "--no-renames", "--no-abbrev", base, head)
        fields = raw.split(b"\0")
        changes: list[FileChange] = []
        at_base: _Ids = {}
        at_head: _Ids = {}
        unreadable: list[str] = []
        for meta, name in zip(fields[0::2], fields[1::2], strict=False):
            if not meta.startswith(b":"):
                continue
            _, _, old, new, letter = meta[1:].decode().split(" ")
            try:
                path = name.decode()
            except UnicodeDecodeError:
                # git keeps a path as bytes; one that is not UTF-8 can be named neither to
                # GitHub nor to the build job. It publishes nothing (a manifest names its
                # artifact in UTF-8): passed over, and a manifest there is a problem. A
                # traceback here stopped every later deploy, whose ranges replay the commit.
                if name.rpartition(b"/")[2] in {n.encode() for n in MANIFEST_NAMES}:
                    unreadable.append(name.decode(errors="backslashreplace"))
                continue
            if not _ZERO.match(old):
                at_base[path] = old
            if not _ZERO.match(new):
                at_head[path] = new
            status = {"A": "added", "D": "removed"}.get(letter, "modified")
            changes.append(FileChange(path, status))
        return changes, at_base, at_head, unreadable

    def ids(self, commit: str, paths: Iterable[str]) -> _Ids:
        """Blob ids of those `paths` that exist at `commit` (one `git ls-tree` per 1,000)."""
        wanted = sorted(set(paths))
        found: _Ids = {}
        for start in range(0, len(wanted), 1000):
            raw = self.run("ls-tree", "-z", commit, "--", *wanted[start : start + 1000])
            for entry in raw.split(b"\0"):
                meta, _, name = entry.partition(b"\t")
                parts = meta.split()
                if len(parts) == 3 and parts[1] == b"blob":
                    found[name.decode()] = parts[2].decode()
        return found

    def blobs(self, ids: Iterable[str]) -> dict[str, bytes]:
        """Blob contents by object id, in one `git cat-file --batch` call."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        out = self.run("cat-file", "--batch", stdin="".join(f"{i}\n" for i in wanted).encode())
        pos, blobs = 0, {}
        for oid in wanted:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if header[-1] == b"missing":
                continue
            size = int(header[2])
            blobs[oid] = out[pos : pos + size]
            pos += size + 1
        return blobs


_Ids = dict[str, str]  # path -> blob id
_ZERO = re.compile(r"^0+$")


@dataclass(frozen=True)
class _Changes:
    touched: list[Touched]
    changed: set[str]  # every path the diff names
    at_base: _Ids  # blob ids of changed paths and of the manifests read, at base
    at_head: _Ids
    unreadable: list[str] = field(default_factory=list)  # manifests at paths not UTF-8


def _changes(git: _Git, base: str, head: str) -> _Changes:
    files, at_base, at_head, unreadable = git.diff(base, head)
    # Folders that may hold an unchanged manifest, looked up in one call. An unchanged manifest
    # is the same at both sides, so head answers for both.
    folders = candidate_folders(files)
    unchanged = git.ids(head, [posixpath.join(f, n) for f in folders for n in MANIFEST_NAMES])

    def manifest_in(folder: str) -> str | None:
        paths = (posixpath.join(folder, n) for n in MANIFEST_NAMES)
        return next((p for p in paths if p in unchanged), None)

    touched = touched_models(files, manifest_in)
    for path, oid in unchanged.items():
        at_base.setdefault(path, oid)
        at_head.setdefault(path, oid)
    return _Changes(touched, {f.path for f in files}, at_base, at_head, unreadable)


def changed_models(repo: Path, base: str, head: str = "HEAD") -> list[Touched]:
    """The models touched between two commits, by `changes.touched_models` (the gate's rule):
    a manifest added, modified or removed, or another file in a model's folder changed.
    Reads no manifest; `plan` adds names, versions and renames on top."""
    git = _Git(repo)
    git.run("rev-parse", "--git-dir")
    return _changes(git, git.commit(base), git.commit(head)).touched


#: What plan reads from a manifest. A document whose fields plan reads are all strings needs no
#: schema check here (`validate` checks the rest); compiling the schema would cost more than
#: planning a one-model change in a repository of 10,000.
_READS = (
    ("metadata", "name"),
    ("metadata", "version"),
    ("metadata", "risk"),
    ("spec", "framework"),
)


def _read(raw: bytes, path: str) -> tuple[dict[str, Any] | None, list[Problem], Any]:
    """(document, problems, node tree) like `parse_document`, schema-checked only when a field
    plan reads is missing or not text, so that the problems then say why with a line."""
    try:
        data, node = safe_yaml.read(raw)
    except safe_yaml.YamlInvalid as exc:
        return None, [Problem(path, exc.line, exc.column, "", exc.message)], None
    artifact = (
        (data.get("spec") or {}).get("artifact") if isinstance(data.get("spec"), dict) else None
    )
    readable = (
        all(isinstance(data.get(a), dict) and isinstance(data[a].get(b), str) for a, b in _READS)
        and isinstance(artifact, dict)
        and isinstance(artifact.get("sha256"), str)
    )
    return (data, [], node) if readable else parse_document(raw, path)


def _field(data: Any, *keys: str) -> Any:
    """data[k1][k2]..., or None where a level is missing or not a mapping."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _meta(data: dict[str, Any], key: str) -> str:
    value = _field(data, "metadata", key)
    return "" if value is None else str(value)


def plan(repo: Path, base: str, head: str = "HEAD") -> Plan:
    """Models are matched across commits by `metadata.name`, not by path: a model moved to
    another folder is the same model (renamed), whatever git's rename detection guesses.

    Only the manifests of touched folders are read (by blob id), so the cost follows the size
    of the change, not of the repository.
    """
    git = _Git(repo)
    git.run("rev-parse", "--git-dir")  # "not a git repository" before anything else
    base_sha, head_sha = git.commit(base), git.commit(head)
    found = _changes(git, base_sha, head_sha)
    head_paths = sorted({t.head for t in found.touched if t.head})
    base_paths = sorted({t.base for t in found.touched if t.base})
    texts = git.blobs(
        [found.at_head[p] for p in head_paths if p in found.at_head]
        + [found.at_base[p] for p in base_paths if p in found.at_base]
    )

    not_utf8 = "the path is not UTF-8: rename it, so that the build job and GitHub can name it"
    problems = [Problem(path, None, None, "", not_utf8) for path in found.unreadable]
    heads: dict[str, tuple[str, dict[str, Any], Any]] = {}  # name -> (path, document, nodes)
    for path in head_paths:
        raw = texts.get(found.at_head.get(path, ""))
        if raw is None:
            continue
        data, errors, node = _read(raw, path)
        if data is None or errors:
            if path in found.changed:
                problems.extend(errors)
            continue
        name = _meta(data, "name")
        if name in heads:  # one row would be picked silently: validate's rule, among these
            line, col = locate(node, ["metadata", "name"])
            message = (
                f"metadata.name: {name!r} is also the name of {heads[name][0]}; {NAMES_UNIQUE}"
            )
            problems.append(Problem(path, line, col, "/metadata/name", message))
            continue
        heads[name] = (path, data, node)
    bases: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in base_paths:
        raw = texts.get(found.at_base.get(path, ""))
        data = _read(raw, path)[0] if raw is not None else None
        name = _field(data, "metadata", "name")
        # A base manifest is only matched by a readable name; the rest of it may be broken
        # (the pull request that fixes it), so it is read with `_field` alone.
        if data is not None and isinstance(name, str) and name:
            bases.setdefault(name, (path, data))

    changed: list[ChangedModel] = []
    versioned: list[tuple[str, dict[str, Any], Any, str, dict[str, Any]]] = []
    for name, (path, data, node) in sorted(heads.items(), key=lambda kv: kv[1][0]):
        old_path, old_data = bases.get(name, (None, None))
        if old_path is None or old_data is None:
            status = "added"
        else:
            status = "renamed" if old_path != path else "modified"
            versioned.append((path, data, node, old_path, old_data))
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
                extras=EXTRA_BY_FRAMEWORK.get(
                    str(data["spec"]["framework"]), str(data["spec"]["framework"])
                ),
            )
        )
    problems += _version_problems(git, found, base_sha, head_sha, versioned)
    deleted = [
        DeletedModel(name, path, _meta(data, "risk"), _meta(data, "version"))
        for name, (path, data) in sorted(bases.items())
        if name not in heads
    ]
    return Plan(base_sha, head_sha, tuple(changed), tuple(deleted), tuple(problems))


def _version_problems(
    git: _Git,
    found: _Changes,
    base_sha: str,
    head_sha: str,
    pairs: list[tuple[str, dict[str, Any], Any, str, dict[str, Any]]],
) -> list[Problem]:
    """A changed artifact (digest or bytes) must come with a higher metadata.version."""
    artifacts = [(_artifact_path(d, p), _artifact_path(od, op)) for p, d, _, op, od in pairs]
    # Artifacts the diff does not name are unchanged; their ids are needed only after a move.
    at_head = {**git.ids(head_sha, [h for h, _ in artifacts if h not in found.changed])}
    at_base = {**git.ids(base_sha, [b for _, b in artifacts if b not in found.changed])}
    at_head.update((p, i) for p, i in found.at_head.items() if p in found.changed)
    at_base.update((p, i) for p, i in found.at_base.items() if p in found.changed)
    problems = []
    for (path, data, node, _, old_data), (new_art, old_art) in zip(pairs, artifacts, strict=True):
        changed = _artifact(data) != _artifact(old_data) or (
            at_head.get(new_art) != at_base.get(old_art)
        )
        problem = _version_problem(path, data, old_data) if changed else None
        if problem:
            line, col = locate(node, ["metadata", "version"])
            problems.append(Problem(path, line, col, problem.pointer, problem.message))
    return problems


def _artifact(data: dict[str, Any]) -> str:
    return str(_field(data, "spec", "artifact", "sha256"))


def _artifact_path(data: dict[str, Any], manifest_path: str) -> str:
    relative = str(_field(data, "spec", "artifact", "path") or "")
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


def deployed_base(
    repo: Path, registry: str, base: str, head: str, *, annotate: bool = False
) -> str:
    """On a push: the last commit whose deploy `registry`'s audit log records for this
    repository (an ancestor of `head`), so the build job converts what publish will deploy
    (`deploy_range`); `base` (the push's `before`) when it records none or cannot be read."""
    import sys

    from mlops_ci import deploy_range
    from mlops_ci.errors import MlopsCiError
    from mlops_ci.github import runs_url
    from mlops_ci.registry import open_registry

    git = _Git(repo)
    git.run("rev-parse", "--git-dir")
    sha = git.commit(head)
    try:
        found = deploy_range.last_processed(open_registry(registry), repo, sha, runs_url())
    except MlopsCiError as exc:
        message = (
            f"cannot read the registry ({exc}): planning the push's own change only; publish "
            "deploys from the last deploy the registry records, and a model changed before this "
            "push that it must publish has no build then (give this job the read-only key)"
        )
        if annotate:
            gha.annotation("warning", message, title="mlops-ci plan")
        print(f"warning: {message}", file=sys.stderr)
        return base
    if found is None:
        print(f"the registry records no earlier deploy: planning {base}..{head}", file=sys.stderr)
        return base
    print(f"planning {found[:12]}..{sha[:12]}: the last commit deployed", file=sys.stderr)
    return found


def main(
    repo: Path, *, base: str, head: str = "HEAD", fmt: str = "text", registry: str | None = None
) -> int:
    if not repo.is_dir():
        raise UsageError(f"{repo}: no such folder")
    if registry:
        base = deployed_base(repo, registry, base, head, annotate=fmt == "github")
    result = plan(repo, base, head)
    if fmt == "json":
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(_text(result))
    if fmt == "github":
        gha.set_output("matrix", json.dumps(result.matrix(), separators=(",", ":")))
        gha.set_output("changed", "true" if result.changed else "false")
        gha.set_output("environments", json.dumps(result.environments(), separators=(",", ":")))
        gha.set_output(
            "deleted", json.dumps([asdict(d) for d in result.deleted], separators=(",", ":"))
        )
        for p in result.problems:
            gha.annotation("error", p.message, file=p.path, line=p.line, title="mlops-ci plan")
        # names, versions and paths are the pull request's: a fence they cannot close
        gha.write_summary("### mlops-ci plan\n\n" + escape.fence(_text(result)))
    return EXIT_VERDICT if result.problems else EXIT_OK
