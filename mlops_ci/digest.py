"""File digests: the SHA-256 that manifests pin, computed and checked before a file is read."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
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


# --- Git LFS pointers ---------------------------------------------------------------------------

#: The versions a Git LFS pointer file may name (git-lfs's docs/spec.md; the second is pre-1.0).
_LFS_VERSIONS = (b"https://git-lfs.github.com/spec/v1", b"https://hawser.github.com/spec/v1")
#: git-lfs never reads a file this large or larger as a pointer.
LFS_POINTER_MAX = 1024
_LFS_OID = re.compile(rb"sha256:([0-9a-f]{64})")
_LFS_EXT = re.compile(rb"ext-[0-9]+-[a-z0-9]+")


@dataclass(frozen=True)
class LfsPointer:
    """What a Git LFS pointer file stands for: the content's SHA-256 and size; `extended`:
    it names extensions (`ext-…` lines), whose filters made the content it names."""

    sha256: str
    size: int
    extended: bool = field(default=False, compare=False)


def lfs_pointer(data: bytes) -> LfsPointer | None:
    """The pointer `data` is, or None. A file committed with Git LFS is stored in git as this
    small text ("version …", any "ext-…" lines, then "oid sha256:…" and "size …"), and is
    checked out as the content only where git-lfs ran. Parsed as git-lfs parses it, so that a
    file git-lfs would take for content is content here too (empty lines are skipped, as
    git-lfs skips them)."""
    if len(data) >= LFS_POINTER_MAX or not data.endswith(b"\n"):
        return None
    lines = [line for line in data[:-1].split(b"\n") if line]
    pairs = [line.split(b" ", 1) for line in lines]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        return None
    if pairs[0][0] != b"version" or pairs[0][1] not in _LFS_VERSIONS:
        return None
    keys = [key for key, _ in pairs[1:]]  # extensions (ext-<n>-<name>), then oid and size
    if keys[-2:] != [b"oid", b"size"] or not all(_LFS_EXT.fullmatch(k) for k in keys[:-2]):
        return None
    fields = dict(pairs[1:])
    oid = _LFS_OID.fullmatch(fields.get(b"oid", b""))
    size = fields.get(b"size", b"")
    if oid is None or not size.isdigit():
        return None
    return LfsPointer(oid.group(1).decode(), int(size), extended=len(keys) > 2)


def content_sha256(data: bytes) -> str:
    """The SHA-256 of the content a file's git blob stands for: the blob's own, or, for a Git
    LFS pointer, the content's it names (git-lfs checks the content against it on checkout).
    Not for a pointer with extensions: its oid is the digest of what the last extension's
    clean filter made, and the checkout holds what their smudge filters make of it (or fails
    where they are not configured); so it stands for no content known here: its own bytes."""
    pointer = lfs_pointer(data)
    if pointer is None or pointer.extended:
        return hashlib.sha256(data).hexdigest()
    return pointer.sha256
