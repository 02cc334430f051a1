"""`mlops-ci validate`: finds manifests, checks them, reports in the format asked for."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mlops_ci import gha
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, UsageError
from mlops_ci.manifest import (
    Checked,
    check_file,
    check_unique_names,
    find_manifests,
    find_repo_root,
)
from mlops_ci.policy import POLICY_PATH
from mlops_ci.report import annotate, json, markdown, terminal
from mlops_ci.resources import POLICY_SCHEMA


def collect(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(manifest, PATH it was found under) for each PATH: files as given, folders recursively."""
    found: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_dir():
            manifests = find_manifests(path)
            if not manifests:
                raise UsageError(f"no model.yaml or model.yml found under {path}")
            found.extend((m, path) for m in manifests)
        elif path.is_file():
            found.append((path, path.parent))
        else:
            raise UsageError(f"{path}: no such file or folder")
    # The same file named twice is checked once.
    unique: dict[Path, tuple[Path, Path]] = {}
    for manifest, origin in found:
        unique.setdefault(Path(os.path.abspath(manifest)), (manifest, origin))
    return list(unique.values())


def check(
    paths: Sequence[Path], root: Path | None = None, *, keep_documents: bool = True
) -> list[Checked]:
    """Every manifest under `paths` checked, with the policy and unique names.

    `keep_documents=False` keeps only what the messages need: over 10,000 files, whole parsed
    documents would cost memory and make every garbage collection pass slower.
    """
    if root is not None and not root.is_dir():
        what = " is a file, not a folder" if root.exists() else ": no such folder"
        raise UsageError(f"--root {root}{what}")
    roots: dict[Path, Path] = {}
    results = []
    # Each file's parse makes thousands of short-lived objects and no reference cycles worth
    # collecting mid-way; the collector's passes over everything alive cost time and free nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for manifest, origin in collect(paths):
            # The repository is looked up once per PATH given, not once per manifest.
            if root is None and origin not in roots:
                roots[origin] = find_repo_root(origin)
            repo = root or roots[origin]
            results.append(check_file(manifest, repo, keep_document=keep_documents))
    finally:
        if collecting:
            gc.enable()
    # A repository's approval policy is checked with its models.
    for path in dict.fromkeys(p for p in paths if p.is_dir()):
        policy = path / POLICY_PATH
        if policy.is_file():
            results.append(check_file(policy, schema=POLICY_SCHEMA))
    return check_unique_names(results)


def main(paths: Sequence[Path], *, fmt: str = "text", root: Path | None = None) -> int:
    results = check(paths, root, keep_documents=False)
    if fmt == "json":
        print(json.validation(results))
    elif fmt == "github":
        annotate.validation(results)
        print(terminal.validation(results))
        gha.write_summary(markdown.validation(results))
    else:
        text = terminal.validation(results)
        stream = sys.stdout if all(r.valid for r in results) else sys.stderr
        print(text, file=stream)
    return EXIT_OK if all(r.valid for r in results) else EXIT_VERDICT
