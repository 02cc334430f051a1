"""File digests: the SHA-256 that manifests pin, computed and checked before a file is read."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlops_ci.errors import CheckFailed


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify_digest(path: Path, sha256: str, *, what: str = "file") -> None:
    """Raise CheckFailed unless the file's bytes have the pinned digest; call before reading it."""
    if not path.is_file():
        raise CheckFailed(f"{what} not found", path=path)
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise CheckFailed(
            f"{what} digest mismatch: expected sha256 {sha256}, actual {actual} "
            "(update the manifest's sha256 if the change is intended)",
            path=path,
        )
