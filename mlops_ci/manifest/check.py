"""The entry points: check one file, check names across files, load a valid manifest.

A file's outcome is a `Checked` value (problems with lines, and the `Manifest` when valid), so
callers that validate and then run stages parse each file once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlops_ci.errors import CheckFailed, UsageError
from mlops_ci.manifest import rules
from mlops_ci.manifest.model import Manifest
from mlops_ci.manifest.paths import display_path, find_repo_root, links_outside
from mlops_ci.manifest.problem import Problem
from mlops_ci.manifest.safe_yaml import MAX_FILE_BYTES, YamlInvalid, locate, read
from mlops_ci.manifest.schema import schema_problems
from mlops_ci.resources import MANIFEST_SCHEMA


@dataclass(frozen=True)
class Checked:
    """The outcome of checking one file: a manifest, or the policy when `schema` says so.

    `manifest` is set for a valid manifest. `data` is the parsed document unless the caller
    asked not to keep it (validate over thousands of files keeps only `name` and `name_at`).
    """

    path: Path
    shown: str
    problems: tuple[Problem, ...]
    data: dict[str, Any] | None = field(default=None, repr=False)
    schema: str = MANIFEST_SCHEMA
    manifest: Manifest | None = field(default=None, repr=False, compare=False)
    name: str | None = None  # metadata.name when it is a string
    name_at: tuple[int, int] | None = None  # its (line, column), for the duplicate-name message

    @property
    def valid(self) -> bool:
        return not self.problems


def parse_document(
    text: str | bytes, path: str, schema_name: str = MANIFEST_SCHEMA
) -> tuple[dict[str, Any] | None, list[Problem], Any]:
    """Parse YAML and check it against a schema: (document or None, problems, node tree).

    Touches no file; used for manifests read from git or the GitHub API, and for the policy.
    """
    try:
        data, node = read(text)
    except YamlInvalid as exc:
        return None, [Problem(path, exc.line, exc.column, "", exc.message)], None
    return data, schema_problems(data, node, path, schema_name), node


def check_file(
    path: Path,
    root: Path | None = None,
    shown: str | None = None,
    schema: str = MANIFEST_SCHEMA,
    *,
    keep_document: bool = True,
) -> Checked:
    """All problems of one manifest file: YAML, schema, files, digests, consistency.

    With another `schema` (the policy's), the YAML and schema checks only.
    """
    shown = shown or display_path(path)
    root = (root or find_repo_root(path.parent)).resolve()
    if links_outside(path, root):
        # a file of the machine (a runner's credentials, /dev/zero) is none of the pull
        # request's: its values would be quoted in the log, a device read without end
        message = "the manifest is a symlink that points outside the repository"
        return Checked(path, shown, (Problem(shown, None, None, "", message),), schema=schema)
    try:
        raw = _read_at_most(path, MAX_FILE_BYTES)
    except OSError as exc:
        problem = Problem(shown, None, None, "", f"cannot read: {exc.strerror}")
        return Checked(path, shown, (problem,), schema=schema)
    if raw is None:
        message = f"file is larger than {MAX_FILE_BYTES:,} bytes; manifests are limited to that"
        return Checked(path, shown, (Problem(shown, None, None, "", message),), schema=schema)
    data, problems, node = parse_document(raw, shown, schema)
    if data is None or schema != MANIFEST_SCHEMA:
        return Checked(path, shown, tuple(problems), data if keep_document else None, schema)
    ctx = rules.Context(data, node, path.absolute(), root, shown)
    reported = {p.pointer for p in problems}
    problems += [
        p for p in rules.semantic_problems(ctx, schema_ok=not problems) if p.pointer not in reported
    ]
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    name = name if isinstance(name, str) else None
    return Checked(
        path,
        shown,
        tuple(problems),
        data if keep_document else None,
        manifest=Manifest(path.absolute(), root, data) if keep_document and not problems else None,
        name=name,
        name_at=locate(node, ["metadata", "name"]) if name is not None else None,
    )


def _read_at_most(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than `limit`: read up to one byte past it,
    since the size a device or a pipe reports (0) says nothing of what reading it gives."""
    if path.stat().st_size > limit:
        return None
    with path.open("rb") as fh:
        raw = fh.read(limit + 1)
    return raw if len(raw) <= limit else None


def check_unique_names(results: Sequence[Checked]) -> list[Checked]:
    """The results again, with a problem on each manifest that reuses another's name."""
    first: dict[str, Checked] = {}
    out: list[Checked] = []
    for result in results:
        name = result.name if result.schema == MANIFEST_SCHEMA else None
        if name is None or result.name_at is None:
            out.append(result)
            continue
        other = first.get(name)
        if other is None or other.name_at is None:
            first[name] = result
            out.append(result)
            continue
        line, col = result.name_at
        extra = Problem(
            result.shown,
            line,
            col,
            "/metadata/name",
            f"metadata.name: '{name}' is already the name of {other.shown}:{other.name_at[0]}; "
            "names must be unique in the repository",
        )
        out.append(replace(result, problems=(*result.problems, extra), manifest=None))
    return out


def load(path: Path, root: Path | None = None) -> Manifest:
    """A valid manifest, or CheckFailed listing every problem with its line."""
    path = Path(path)
    if path.is_dir():
        inside = [path / n for n in ("model.yaml", "model.yml") if (path / n).is_file()]
        hint = f": give {inside[0]}" if inside else " (with no model.yaml in it)"
        raise UsageError(f"manifest {path} is a folder, not a model.yaml{hint}")
    if not path.is_file():
        raise UsageError(f"manifest {path} does not exist")
    result = check_file(path, root)
    if result.manifest is None:
        lines = "\n".join(f"  {p}" for p in result.problems)
        raise CheckFailed(f"{result.shown} is not a valid manifest:\n{lines}")
    return result.manifest
