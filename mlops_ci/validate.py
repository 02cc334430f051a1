"""`mlops-ci validate`: finds manifests, checks them, reports in the format asked for."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from mlops_ci import gha, report
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, UsageError
from mlops_ci.manifest import (
    Checked,
    check_file,
    check_unique_names,
    find_manifests,
    find_repo_root,
)


def collect(paths: Sequence[Path]) -> list[Path]:
    """Manifest files named by PATHs: files as given, folders searched recursively."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            manifests = find_manifests(path)
            if not manifests:
                raise UsageError(f"no model.yaml or model.yml found under {path}")
            found.extend(manifests)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    # The same file named twice is checked once.
    unique: dict[Path, Path] = {}
    for f in found:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def check(paths: Sequence[Path], root: Path | None = None) -> list[Checked]:
    files = collect(paths)
    if root is not None and not root.is_dir():
        raise UsageError(f"--root {root}: no such folder")
    results = []
    roots: dict[Path, Path] = {}
    for f in files:
        # One repository lookup per folder, not per file.
        repo = root or roots.setdefault(f.parent, find_repo_root(f.parent))
        results.append(check_file(f, repo))
    return check_unique_names(results)


def main(paths: Sequence[Path], *, fmt: str = "text", root: Path | None = None) -> int:
    results = check(paths, root)
    if fmt == "json":
        print(report.validation_json(results))
    elif fmt == "github":
        report.validation_annotations(results)
        print(report.validation_text(results))
        gha.write_summary(report.validation_markdown(results))
    else:
        text = report.validation_text(results)
        stream = sys.stdout if all(r.valid for r in results) else sys.stderr
        print(text, file=stream)
    return EXIT_OK if all(r.valid for r in results) else EXIT_VERDICT
