"""Where manifests live and what their paths may name: discovery, repository root, containment."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

MANIFEST_NAMES = ("model.yaml", "model.yml")
#: The manifest schema's rule for metadata.name (schemas/model-manifest.v1.json). A name that
#: passes it is safe as a folder name; one taken from a document that failed validation may be
#: `../..` or an absolute path.
MODEL_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_DRIVE = re.compile(r"^[A-Za-z]:")


def find_repo_root(start: Path) -> Path:
    """The enclosing git checkout of `start`, else the current folder when it contains `start`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    cwd = Path.cwd().resolve()
    return cwd if start.is_relative_to(cwd) else (start if start.is_dir() else start.parent)


def display_path(path: Path) -> str:
    """A path as a person wants to read it: relative to the current folder where it can be."""
    if not path.is_absolute():
        return os.path.normpath(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def find_manifests(folder: Path) -> list[Path]:
    """Every model.yaml / model.yml below `folder`, skipping hidden folders, sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "node_modules")
        found.extend(Path(dirpath) / f for f in filenames if f in MANIFEST_NAMES)
    return sorted(found)


@lru_cache(maxsize=4096)
def _real(folder: str) -> str:
    return os.path.realpath(folder)


def _inside(folder: str, target: str) -> bool:
    return target == folder or target.startswith(folder.rstrip(os.sep) + os.sep)


def _has_link(real_base: str, target: str) -> bool:
    """Whether a component of `target` below its common part with `real_base` is a symlink."""
    common = real_base if _inside(real_base, target) else os.path.commonpath([real_base, target])
    current = common
    # Both are normalised and absolute, so what `target` adds is a plain suffix (relpath is slow).
    for part in target[len(common) :].split(os.sep):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        if os.path.islink(current):
            return True
    return False


def links_outside(path: Path, root: Path) -> bool:
    """Whether `path` reaches through a symlink (its own, or a folder's) to a file outside
    `root` (resolved). A path with no link on the way is not checked: it is where it is."""
    folder = os.path.abspath(path.parent)
    real = os.path.join(_real(folder), path.name)
    if os.path.islink(real):
        real = os.path.realpath(real)
    elif real == os.path.join(folder, path.name):
        return False
    return not _inside(str(root), real)


def resolve_inside(base: Path, relative: str, root: Path) -> tuple[Path | None, str | None]:
    """(absolute path, None) or (None, why not): relative, inside root even after symlinks."""
    if not relative or relative.startswith(("/", "\\")) or _DRIVE.match(relative):
        return None, f"'{relative}' must be a path relative to the manifest"
    root_real, base_real = _real(str(root)), _real(str(base))
    # The folders above are resolved once each; only what the relative path adds can be a link.
    target = os.path.normpath(os.path.join(base_real, relative))
    if not _inside(root_real, target):
        return None, f"'{relative}' points outside the repository"
    if _has_link(base_real, target):
        target = os.path.realpath(target)
        if not _inside(root_real, target):
            return None, f"'{relative}' is a symlink that points outside the repository"
    return Path(target), None
