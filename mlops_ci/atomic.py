"""Atomic file writes: write beside the target, then rename, so readers never see half a file."""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

#: rw-r--r--, what open() gives under the usual umask 022
FILE_MODE = 0o644
#: The most bytes handed to one write(). Measured on ext4 under a 6.x kernel (bench/deploy.py):
#: a 50 MB payload written in one call took ~165 ms, in 1 MiB calls ~30 ms, as fast as the
#: kernel's own file copy; calls of 4 MiB and more were as slow as one call.
WRITE_CHUNK = 1 << 20


def write_all(fd: int, payload: bytes | memoryview) -> None:
    """Write all of `payload` to the file descriptor `fd`, at most WRITE_CHUNK bytes a call."""
    view = memoryview(payload)
    while view:
        done = os.write(fd, view[:WRITE_CHUNK])
        view = view[done:]


def open_making_folder(path: Path, flags: int, mode: int) -> int:
    """os.open, making `path`'s folder only when the open finds none: a write costs a system
    call less than a `mkdir(exist_ok=True)` before every open."""
    try:
        return os.open(path, flags, mode)
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # not a folder: a dangling symlink, say (never a name clash)
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path.parent)) from None
        return os.open(path, flags, mode)


#: A file created here and now (never one that exists, nor through a symlink).
_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _temp_beside(path: Path, payload: bytes, fsync: bool) -> Path:
    """A temporary file holding `payload` in `path`'s folder (created when missing), mode
    FILE_MODE; renaming or linking it over `path` is then atomic."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = open_making_folder(tmp, _NEW, 0o600)
            break
        except FileExistsError:  # another writer's temporary file: draw another name
            continue
    try:
        # Created 0600, as mkstemp would; reports and models are for other people and
        # processes too (a web server, a reviewer's account), whatever the umask
        os.fchmod(fd, FILE_MODE)
        try:
            write_all(fd, payload)
            if fsync:  # durable against power loss, not only against a killed process
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_bytes(path: Path, payload: bytes, *, fsync: bool = False) -> Path:
    """Write `payload` to `path` atomically (the folder is created when missing)."""
    tmp = _temp_beside(path, payload, fsync)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def create_bytes(path: Path, payload: bytes, *, fsync: bool = False) -> bool:
    """Create `path` holding `payload`, atomically and only if it does not exist yet: False
    when it does (then nothing is written). Two racing creators never both win."""
    if not payload:  # an empty file is whole the moment it exists: no temporary file needed
        try:
            fd = open_making_folder(path, _NEW, 0o600)
        except FileExistsError:
            return False
        try:
            os.fchmod(fd, FILE_MODE)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return True
    tmp = _temp_beside(path, payload, fsync)
    try:
        os.link(tmp, path)  # link() fails when the target exists: an atomic create-only write
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically, as UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def json_text(doc: Any, indent: int | None = 2, *, sort_keys: bool = False) -> str:
    """`doc` as JSON that any parser reads: a NaN or an infinity (which Python writes as bare
    words that jq, JavaScript and the JSON standard refuse) becomes null."""
    return json.dumps(
        _finite(doc), indent=indent, ensure_ascii=False, allow_nan=False, sort_keys=sort_keys
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, doc: Any) -> Path:
    """Write `doc` as indented JSON to `path` atomically."""
    return write_text(path, json_text(doc) + "\n")
