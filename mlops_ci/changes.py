"""Which models a list of changed files touches: the one rule shared by plan, gate and deploy.

A model is touched when its manifest is added, modified, removed or renamed, or when any other
file in its folder changes (its folder: the nearest folder above the file holding a manifest, at
the base commit and at the head: a manifest added or removed below a model does not take the
files between them from that model).
Pure: the caller says where manifests are, from git (`plan.changed_models`) or from the
GitHub API (`gate.collect_facts`), so both decide identically.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from mlops_ci.manifest import MANIFEST_NAMES


@dataclass(frozen=True)
class FileChange:
    """One changed path: a `git diff` entry or one of GitHub's pull-request files."""

    path: str
    status: str  # added | modified | removed | renamed (GitHub's copied/changed map to these)
    previous: str | None = None  # the old path of a rename


@dataclass(frozen=True)
class Touched:
    """A model the change touches, by its manifest's path at each side (None: absent there)."""

    path: str  # the manifest's path, at head where it exists
    kind: str  # added | removed | modified | renamed | files
    base: str | None
    head: str | None


def is_manifest(path: str) -> bool:
    return posixpath.basename(path) in MANIFEST_NAMES


def ancestors(path: str) -> Iterator[str]:
    """The folders holding `path`, nearest first, ending with the repository root ("")."""
    folder = posixpath.dirname(path)
    while True:
        yield folder
        if not folder:
            return
        folder = posixpath.dirname(folder)


def candidate_folders(changes: Iterable[FileChange]) -> set[str]:
    """Every folder whose manifest `touched_models` may ask about: lets a caller look them up
    in one batch (git) before the rule runs."""
    return {
        folder
        for c in changes
        for path in (c.path, c.previous)
        if path and not is_manifest(path)
        for folder in ancestors(path)
    }


def _normal(change: FileChange) -> FileChange:
    status = {"copied": "added", "changed": "modified", "unchanged": "modified"}.get(
        change.status, change.status
    )
    return FileChange(change.path, status, change.previous if status == "renamed" else None)


def touched_models(
    changes: Sequence[FileChange], manifest_in: Callable[[str], str | None]
) -> list[Touched]:
    """The models `changes` touch, sorted by path.

    `manifest_in(folder)` names the manifest in a folder whose manifest did not change (so it is
    the same at base and head), or None; it is asked only about folders no changed manifest
    already claims, nearest first, and each folder at most once.
    """
    models: dict[str, Touched] = {}
    others: list[str] = []
    for change in map(_normal, changes):
        old, new = change.previous, change.path
        if change.status == "renamed" and old is not None:
            pair = (old if is_manifest(old) else None, new if is_manifest(new) else None)
            others += [p for p in (old, new) if not is_manifest(p)]
            if pair == (None, None):
                continue
            kind = "renamed" if None not in pair else ("removed" if pair[0] else "added")
            touched = Touched(pair[1] or pair[0] or new, kind, pair[0], pair[1])
        elif not is_manifest(new):
            others.append(new)
            continue
        elif change.status == "removed":
            touched = Touched(new, "removed", new, None)
        elif change.status == "added":
            touched = Touched(new, "added", None, new)
        else:
            touched = Touched(new, "modified", new, new)
        models[touched.path] = touched
    # The sides (base, head) at which a folder holds a manifest, where one changed. A file
    # belongs to its nearest manifest at base AND to its nearest at head: a manifest added
    # below a model (or removed from below it) must not take the model's files from it.
    claimed: dict[str, set[str]] = {}
    for t in models.values():
        for side, p in (("base", t.base), ("head", t.head)):
            if p:
                claimed.setdefault(posixpath.dirname(p), set()).add(side)
    both = {"base", "head"}
    probed: set[str] = set()
    for path in others:
        unowned = set(both)  # the sides whose nearest manifest is still to be found
        for folder in ancestors(path):
            if folder in claimed:
                unowned -= claimed[folder]
                if not unowned:
                    break
                continue
            if folder in probed:
                continue
            probed.add(folder)
            found = manifest_in(folder)
            if found is not None:
                models.setdefault(found, Touched(found, "files", found, found))
                claimed[folder] = both
                break
    return [models[k] for k in sorted(models)]
