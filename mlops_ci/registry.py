"""The model registry: a Triton model repository on a folder or on S3, behind one small interface.

It owns storage (atomic and conditional writes, listing, the registry-wide lock) and the read-only
model view (which models, which versions, which one serves, digest-checked model bytes). What is
written where, and in which order, is `deploy.py`'s business; `audit.py` owns the log's format.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import unquote, urlparse

from mlops_ci import atomic
from mlops_ci.errors import MlopsCiError

if TYPE_CHECKING:
    import pyarrow.fs

    from mlops_ci import s3

#: Where the registry keeps what Triton must not see (Triton ignores folders starting with '.').
META = ".mlops"
LOCK_KEY = f"{META}/lock"
#: A lock on S3 older than this is taken to belong to a crashed deploy and may be broken.
DEFAULT_LOCK_TTL_S = 600.0

#: A version folder's name as Triton reads one: a positive number, no leading zero.
VERSION_DIR = re.compile(r"[1-9][0-9]{0,17}")
#: The files of a whole version: a folder holding all of them (or with its release marker) is one.
VERSION_FILES = ("model.onnx", "model.yaml", "release.json")

#: An empty file beside a model's version folders, `<model>/.release-<n>-<semver>`, written once
#: version n is complete and recorded: its name tells one listing of the model's folder (not of
#: every version folder in it) that n is a complete version and which semver it holds, so a
#: publish reads no release.json to find out whether its semver is published. Triton and KServe
#: ignore it. A version without one (a kill came first, or it was written by hand) is asked its
#: release.json.
RELEASE_MARKER = re.compile(r"\.release-([1-9][0-9]{0,17})-(.+)")


def release_marker(n: int, semver: str) -> str:
    return f".release-{n}-{semver}"


#: On S3 a log that is appended to (the audit trail) is kept in segments: `<key>` holds its
#: first SEGMENT_LINES lines, `<key>.000001` the next ones, and so on. S3 has no append, so an
#: append rewrites the last segment only, and its cost stays flat however long the log grows.
SEGMENT_LINES = 256
_SEGMENT_SUFFIX = re.compile(r"\.([0-9]{6})")
#: An S3 bucket's name (AWS's rules, with the upper case and '_' that older buckets and other
#: stores allow): no '#', '?', ':' or '@' that a URI would read as something else.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
#: An S3 ETag that is an MD5 of the object's bytes (single-part, no SSE-KMS), as listed.
_MD5_ETAG = re.compile(r'"[0-9a-f]{32}"')


class RegistryError(MlopsCiError):
    """The registry is unreachable, misconfigured, or holds bytes that fail their digest: exit 2."""


def _check_key(key: str) -> str:
    """Keys are '/'-separated and relative; refuse anything that could leave the root."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise RegistryError(f"invalid registry key {key!r}")
    return key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FolderNames = list[str]
#: The names of the folders directly in a folder, sorted, and of its files, each with the tag
#: its store lists for it ("" when the store lists none; on S3 the ETag, see `Store.holds`).
FolderListing = tuple[FolderNames, dict[str, str]]


@dataclass
class Held:
    """The registry lock, held. `early`: what the lock's `meanwhile` read while the lock was
    being taken (only a hint: the last holder may have written since). `on_release`: writes
    that go out as the lock is released, on S3 together with its release (a round trip less):
    only writes that the next holder does without, should it come first: a release marker (a
    version without one is asked its release.json)."""

    early: Any = None
    on_release: list[Callable[[], object]] = field(default_factory=list)


class Store(Protocol):
    """The storage primitives a backend provides. `token`s are opaque change markers (an S3 ETag,
    or the file's inode, time and size on a folder) for compare-and-swap writes."""

    uri: str
    #: Whether independent reads are worth running concurrently (a round trip each on S3; on a
    #: folder a thread costs more than the read it would overlap).
    concurrent: bool

    def get(self, key: str) -> tuple[bytes, str] | None: ...
    def get_many(self, keys: list[str]) -> list[bytes | None]: ...
    def tail(self, key: str, nbytes: int, lines: int | None = None) -> bytes | None: ...
    def put(self, key: str, data: bytes) -> None: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def put_if_match(self, key: str, data: bytes, token: str) -> bool: ...
    def append(self, key: str, data: bytes, after: bytes | None = None) -> None: ...
    def read_log(self, key: str) -> bytes | None: ...
    def delete(self, key: str) -> None: ...
    def configs(self) -> list[str]: ...
    def model_keys(self) -> list[str]: ...
    def list(self, prefix: str) -> list[str]: ...
    def folder(self, prefix: str) -> FolderListing: ...
    def stamp(self, key: str) -> str | None: ...
    def change_stamp(self, key: str) -> str | None: ...
    def put_folder(self, prefix: str, files: dict[str, bytes]) -> None: ...
    def holds(self, key: str, data: bytes, tag: str | None) -> bool: ...
    def lock(
        self, timeout_s: float, meanwhile: Callable[[], Any] | None = None
    ) -> contextlib.AbstractContextManager[Held]: ...
    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]: ...
    def child_uri(self, key: str) -> str: ...


#: fsync every write (MLOPS_CI_FSYNC=1). Atomicity against a killed process needs no fsync (the
#: rename is atomic either way); fsync adds durability against power loss, where without it
#: the digest check on every read still refuses a version whose bytes did not reach the disk.
_FSYNC = os.environ.get("MLOPS_CI_FSYNC", "") not in ("", "0")


# --- the filesystem ----------------------------------------------------------------------------


class FileStore:
    """A folder. Writes go to a temporary file beside the target and are renamed over it; a
    version folder is staged as `.staging-…` (Triton ignores dot-folders) and renamed whole."""

    concurrent = False

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            with open(self._path(key), "rb") as fh:
                # The file's stamp, not a digest of its bytes: reads of big models stay one pass.
                return fh.read(), _stamp(os.fstat(fh.fileno()))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read {self._path(key)}: {exc.strerror}") from exc

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [None if (got := self.get(key)) is None else got[0] for key in keys]

    def tail(self, key: str, nbytes: int, lines: int | None = None) -> bytes | None:
        """The last `nbytes` of a log (None: no log). `lines`: how many lines the caller
        believes it has, a hint a store may use to find its end (a folder needs none)."""
        try:
            with open(self._path(key), "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - nbytes))
                return fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put(self, key: str, data: bytes) -> None:
        self._write(self._path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        try:
            atomic.write_bytes(path, data, fsync=_FSYNC)
        except OSError as exc:
            raise RegistryError(f"cannot write {path}: {exc.strerror}") from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            return atomic.create_bytes(path, data, fsync=_FSYNC)
        except OSError as exc:
            raise RegistryError(f"cannot write {path}: {exc.strerror}") from exc

    def put_if_match(self, key: str, data: bytes, token: str) -> bool:
        with self._flock(self.root / META / ".cas.lock", timeout_s=60.0):
            if self.stamp(key) != token:
                return False
            self.put(key, data)
            return True

    def append(self, key: str, data: bytes, after: bytes | None = None) -> None:
        """Append `data`. `after`: the bytes the log must end with (b"": no log, or an empty
        one), else nothing is written (`moved_on`)."""
        path = self._path(key)
        # One write() with O_APPEND: a killed process leaves the line whole or absent.
        fd = atomic.open_making_folder(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, atomic.FILE_MODE)
        try:
            if after is not None:
                size = os.fstat(fd).st_size
                end = os.pread(fd, len(after), size - len(after)) if size >= len(after) else None
                if end != after or (not after and size):
                    raise moved_on(self.uri, key)
            os.write(fd, data)
            if _FSYNC:
                os.fsync(fd)
        finally:
            os.close(fd)

    def read_log(self, key: str) -> bytes | None:
        got = self.get(key)
        return None if got is None else got[0]

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def configs(self) -> list[str]:
        """`<model>/config.pbtxt` of every model folder (not the prediction log's files)."""
        if not self.root.is_dir():
            return []
        return sorted(
            f"{d.name}/config.pbtxt"
            for d in self.root.iterdir()
            if not d.name.startswith(".") and (d / "config.pbtxt").is_file()
        )

    def model_keys(self) -> list[str]:
        """Every file in a model folder (a top-level folder whose name does not start with
        '.'), sorted: `.mlops/`, whose prediction log grows by the day, is never walked."""
        if not self.root.is_dir():
            return []
        with os.scandir(self.root) as entries:
            folders = [e.name for e in entries if e.name[:1] != "." and e.is_dir()]
        return sorted(key for name in folders for key in self.list(name))

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        keys = []
        cut = len(str(self.root)) + 1  # os.walk's paths start with the root's (string ops: fast)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".staging-")]
            rel = dirpath[cut:]
            for name in filenames:
                if name.endswith(".tmp") and name.startswith("."):
                    continue  # a write in progress (or a crashed one)
                keys.append(f"{rel}/{name}" if rel else name)
        return sorted(keys)

    def folder(self, prefix: str) -> FolderListing:
        """The folders and the files directly in `prefix` (a directory lists no tags)."""
        folders, files = [], {}
        try:
            with os.scandir(self._path(prefix)) as entries:
                for entry in entries:
                    if entry.is_dir():
                        if not entry.name.startswith(".staging-"):
                            folders.append(entry.name)
                    elif not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                        files[entry.name] = ""
        except (FileNotFoundError, NotADirectoryError):
            pass
        return sorted(folders), dict(sorted(files.items()))

    def holds(self, key: str, data: bytes, tag: str | None) -> bool:
        """Whether `key` holds `data`; `tag`, what a listing said of it, tells a folder
        nothing: the file is read."""
        got = self.get(key)
        return got is not None and got[0] == data

    def stamp(self, key: str) -> str | None:
        try:
            return _stamp(self._path(key).stat())
        except OSError:
            return None

    def change_stamp(self, key: str) -> str | None:
        """What changes whenever `key` is written: on a folder its stamp (a new inode each)."""
        return self.stamp(key)

    def put_folder(self, prefix: str, files: dict[str, bytes]) -> None:
        target = self._path(prefix)
        if target.exists():
            raise RegistryError(f"{target} exists already; versions are never overwritten")
        staging = target.parent / f".staging-{target.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            for name, data in files.items():
                fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, atomic.FILE_MODE)
                try:
                    os.fchmod(fd, atomic.FILE_MODE)  # whatever the umask, as every registry file
                    atomic.write_all(fd, data)
                    if _FSYNC:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            os.rename(staging, target)
        except BaseException:
            for child in staging.glob("*"):
                child.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                staging.rmdir()
            raise

    @contextlib.contextmanager
    def lock(self, timeout_s: float, meanwhile: Callable[[], Any] | None = None) -> Iterator[Held]:
        """Hold the registry's lock (`Held`); `meanwhile` runs once it is held, and the
        `on_release` writes just before it is released."""
        with self._flock(self.root / LOCK_KEY, timeout_s):
            held = Held(None if meanwhile is None else meanwhile())
            yield held
            for write in held.on_release:
                write()

    @staticmethod
    @contextlib.contextmanager
    def _flock(path: Path, timeout_s: float) -> Iterator[None]:
        # flock is released by the kernel when its holder dies, so a kill -9 never wedges it.
        fd = atomic.open_making_folder(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise RegistryError(
                            f"{path} is held by another deploy for more than {timeout_s:.0f} s"
                        ) from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), self.root.as_posix()

    def child_uri(self, key: str) -> str:
        return self._path(key).as_uri()


def _stamp(st: os.stat_result) -> str:
    """A folder file's change marker: every write is a rename to a new inode or an append."""
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"


# --- S3 ----------------------------------------------------------------------------------------


class S3Store:
    """A bucket and prefix on any S3-compatible store (AWS_ENDPOINT_URL and the usual AWS
    variables pick it). S3 has no rename: a version folder's objects are put together, a
    folder is a version only once they are all there, and only a complete folder is ever named
    by config.pbtxt.
    Exclusive writes are conditional puts (`If-None-Match: *`, `If-Match: <etag>`)."""

    concurrent = True

    def __init__(self, bucket: str, prefix: str) -> None:
        from mlops_ci import s3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        endpoint, region = s3.configured()
        if endpoint:
            try:
                parts = urlparse(endpoint)
                ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
            except ValueError:  # an unclosed IPv6 bracket, a port out of range
                ok = False
            if not ok:
                raise RegistryError(
                    f"the S3 endpoint {endpoint!r} (AWS_ENDPOINT_URL, or endpoint_url in the AWS "
                    "config file) is not an http(s) URL such as http://127.0.0.1:8333"
                )
        self.endpoint = endpoint
        self.region = region
        # gather + get_many run up to ~20 requests at once: 32 connections keep them all open
        self.client = s3.Client(bucket, region, endpoint, connections=32)
        #: per log key: its segment keys, and the last one's bytes and ETag, as last read
        self._log_cache: dict[str, tuple[list[str], bytes, str]] = {}

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception, what: str) -> RegistryError:
        return RegistryError(f"{self.uri}: cannot {what}: {exc}")

    def get(self, key: str) -> tuple[bytes, str] | None:
        resp = self._response(key)
        return None if resp is None else (resp.body, resp.headers.get("etag", ""))

    def _response(self, key: str) -> s3.Response | None:
        """The store's answer to a GET of `key` (body and headers); None: no such object."""
        from mlops_ci.s3 import S3Failure

        try:
            return self.client.get(self._key(key))
        except S3Failure as exc:
            if _absent(exc):
                return None
            raise self._fail(exc, f"read {key}") from exc

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        # One round trip's latency for many small objects, not one each.
        got = together([functools.partial(self.get, key) for key in keys], threads=15)
        return [None if one is None else one[0] for one in got]

    def _range(self, key: str, nbytes: int) -> bytes | None:
        """The last `nbytes` of an object (None when it is absent)."""
        from mlops_ci.s3 import S3Failure

        try:
            return self.client.get(self._key(key), last_bytes=nbytes).body
        except S3Failure as exc:
            if _absent(exc):
                return None
            if exc.status == 416:
                return b""  # an empty object has no last bytes
            raise self._fail(exc, f"read {key}") from exc

    # A log's segments (SEGMENT_LINES). Appends are compare-and-swap writes on the last
    # segment, or create-only writes of the next one, so two writers never both land, and a
    # writer that saw an older state always fails and reads again.

    def _segments(self, key: str) -> list[str]:
        """The keys of a log's segments, in order."""
        found = []
        for k in self._list_raw(self._key(key)):
            if k == key:
                found.append((0, k))
            elif k.startswith(key) and (m := _SEGMENT_SUFFIX.fullmatch(k[len(key) :])):
                found.append((int(m.group(1)), k))
        return [k for _, k in sorted(found)]

    def _last_segment(self, key: str) -> tuple[list[str], bytes, str] | None:
        """The segment keys, and the last one's bytes and ETag (None: no log yet)."""
        for _ in range(10):
            segments = self._segments(key)
            if not segments:
                return None
            got = self.get(segments[-1])
            if got is not None:
                return segments, got[0], got[1]
        raise RegistryError(f"{self.uri}/{key}: its segments keep changing while read")

    def _segment_key(self, key: str, index: int) -> str:
        return key if index == 0 else f"{key}.{index:06d}"

    def _hinted_segment(self, key: str, lines: int) -> tuple[list[str], bytes, str] | None:
        """The last segment of a log that has `lines` or `lines + 1` lines, found without a
        listing (segment i holds lines i·SEGMENT_LINES + 1 onwards); None when the segment
        there does not bear the hint out, or is full (a successor only a listing would show)."""
        index = (lines - 1) // SEGMENT_LINES
        got = self.get(self._segment_key(key, index))
        if got is None:
            return None
        body, etag = got
        count = body.count(b"\n")
        if count >= SEGMENT_LINES or index * SEGMENT_LINES + count not in (lines, lines + 1):
            return None
        keys = [self._segment_key(key, i) for i in range(max(0, index - 1), index + 1)]
        return keys, body, etag  # the last two segments' keys are all that tail and append use

    def tail(self, key: str, nbytes: int, lines: int | None = None) -> bytes | None:
        # With a hint (the audit head's seq), the end is one read, not a listing and a read.
        last = self._hinted_segment(key, lines) if lines else None
        last = last or self._last_segment(key)
        if last is None:
            return None
        self._log_cache[key] = last  # for the append that usually follows
        segments, data, _ = last
        if len(data) < nbytes and len(segments) > 1:
            data = (self._range(segments[-2], nbytes - len(data)) or b"") + data
        return data[-nbytes:]

    def append(self, key: str, data: bytes, after: bytes | None = None) -> None:
        """Append `data` (`FileStore.append`). With `after`, a writer that finds the log
        moved on since it read its end fails instead of appending after another's line."""
        # The state `tail` just read (the caller reads the log's end before it appends) saves
        # a listing and a read; a stale one only costs a failed conditional write.
        state = self._log_cache.pop(key, None)
        for _ in range(100):
            state = state or self._last_segment(key)
            if after is not None and not (
                (state is not None and state[1].endswith(after)) if after else state is None
            ):
                raise moved_on(self.uri, key)
            if state is None:
                if self.put_if_absent(key, data):
                    return
            else:
                segments, body, etag = state
                if body.count(b"\n") < SEGMENT_LINES:
                    if self.put_if_match(segments[-1], body + data, etag):
                        return
                else:
                    m = _SEGMENT_SUFFIX.fullmatch(segments[-1][len(key) :])
                    index = int(m.group(1)) + 1 if m else 1
                    if self.put_if_absent(self._segment_key(key, index), data):
                        return
            # The condition failed: another writer came first, or our own write landed and
            # its response was lost, so the retry found the condition gone. Appended
            # lines are unique (an audit record names its predecessor and its time), so a log
            # that now ends with them ends with ours: appending them again would repeat it.
            state = self._last_segment(key)
            if state is not None and state[1].endswith(data):
                return
            time.sleep(0.01)
        raise RegistryError(f"{self.uri}/{key}: too many concurrent writers")

    def read_log(self, key: str) -> bytes | None:
        for _ in range(10):
            segments = self._segments(key)
            if not segments:
                return None
            parts = self.get_many(segments)
            if all(part is not None for part in parts):
                return b"".join(p for p in parts if p is not None)
        raise RegistryError(f"{self.uri}/{key}: its segments keep changing while read")

    def put(self, key: str, data: bytes) -> None:
        from mlops_ci.s3 import S3Failure

        try:
            self.client.put(self._key(key), data)
        except S3Failure as exc:
            raise self._fail(exc, f"write {key}") from exc

    def _conditional(self, key: str, data: bytes, *, if_match: str | None = None) -> str | None:
        """Create `key` (or, `if_match`, replace that ETag): the new object's ETag, or None
        when the condition failed."""
        from mlops_ci.s3 import S3Failure

        try:
            return self.client.put(
                self._key(key), data, if_none_match=if_match is None, if_match=if_match
            )
        except S3Failure as exc:
            if _condition_failed(exc):
                return None
            raise self._fail(exc, f"write {key}") from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._conditional(key, data) is not None

    def put_if_match(self, key: str, data: bytes, token: str) -> bool:
        return self._conditional(key, data, if_match=token) is not None

    def delete(self, key: str) -> None:
        from mlops_ci.s3 import S3Failure

        try:
            self.client.delete(self._key(key))
        except S3Failure as exc:
            raise self._fail(exc, f"delete {key}") from exc

    def configs(self) -> list[str]:
        return [k for k in self.model_keys() if k.count("/") == 1 and k.endswith("/config.pbtxt")]

    def model_keys(self) -> list[str]:
        # '.' sorts before every model name's first character, so listing after ".\x7f" skips
        # .mlops/ (the prediction log can be millions of objects) without reading it.
        return [k for k in self.list("", start_after=".\x7f") if "/" in k and not k.startswith(".")]

    def _list_raw(self, full: str, start_after: str = "") -> list[str]:
        """Keys (relative to the registry) of the objects whose full key starts with `full`."""
        from mlops_ci.s3 import S3Failure

        cut = len(self.prefix) + 1 if self.prefix else 0
        try:
            listed = self.client.list(full, start_after=start_after)
        except S3Failure as exc:
            raise self._fail(exc, f"list {full[cut:] or '/'}") from exc
        return sorted(k[cut:] for k in listed.objects if k[cut:] and not k.endswith("/"))

    def list(self, prefix: str, start_after: str = "") -> list[str]:
        full = self._key(prefix.strip("/")) + "/" if prefix.strip("/") else ""
        if self.prefix and not full:
            full = self.prefix + "/"
        return self._list_raw(full, full + start_after if start_after else "")

    def folder(self, prefix: str) -> FolderListing:
        # One level (Delimiter "/"): a store that keeps folders (SeaweedFS's filer) reads one
        # directory, not every version folder below it.
        from mlops_ci.s3 import S3Failure

        full = self._key(prefix.strip("/")) + "/"
        try:
            listed = self.client.list(full, delimiter="/")
        except S3Failure as exc:
            raise self._fail(exc, f"list {prefix}") from exc
        folders = [p[len(full) :].rstrip("/") for p in listed.prefixes]
        files = {k[len(full) :]: tag for k, tag in listed.objects.items()}
        return sorted(f for f in folders if f), {f: files[f] for f in sorted(files) if f}

    def holds(self, key: str, data: bytes, tag: str | None) -> bool:
        """Whether `key` holds `data`, from the ETag a listing gave (`tag`, None: absent), with
        no read: a single-part upload's ETag is its MD5. An ETag of another kind (multipart,
        SSE-KMS) says nothing: then the object is read."""
        if tag is None:
            return False
        if _MD5_ETAG.fullmatch(tag):
            return tag == f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        got = self.get(key)
        return got is not None and got[0] == data

    def stamp(self, key: str) -> str | None:
        headers = self._head(key)
        return None if headers is None else headers.get("etag", "")

    def change_stamp(self, key: str) -> str | None:
        """What changes whenever `key` is written. Its ETag alone does not: the same bytes
        written again keep it (a registry replaced under a server writes the same
        config.pbtxt), so the time of the write, and the version where the bucket keeps them,
        go with it."""
        headers = self._head(key)
        if headers is None:
            return None
        parts = (headers.get(name, "") for name in ("etag", "last-modified", "x-amz-version-id"))
        return " ".join(parts)

    def _head(self, key: str) -> Mapping[str, str] | None:
        from mlops_ci.s3 import S3Failure

        try:
            return self.client.head(self._key(key)).headers
        except S3Failure as exc:
            if exc.status == 404:
                return None
            raise self._fail(exc, f"stat {key}") from exc

    def put_folder(self, prefix: str, files: dict[str, bytes]) -> None:
        # Every object is created, never replaced (If-None-Match: *): a stray second writer of
        # the same version fails instead of overwriting, and no listing beforehand costs a
        # round trip. They all go together, release.json too: one round trip, not two (it
        # went last once, a round trip of ~3 ms). So a kill, or a reader during this call,
        # can meet release.json without the others: a folder is a version only with its
        # release marker or with all of VERSION_FILES (`Registry.version_folders`), and
        # config.pbtxt names a version only after this returns.
        created = together(
            [
                functools.partial(self._create, f"{prefix}/{name}", data)
                for name, data in files.items()
            ]
        )
        if not all(created):
            raise RegistryError(
                f"{self.uri}/{prefix} exists already; versions are never overwritten"
            )

    def _create(self, key: str, data: bytes) -> bool:
        """Create `key` holding `data` unless it exists. Also True when the object is there
        with these very bytes: our first attempt landed and its response was lost, and
        the retry met the condition (a single-part upload's ETag is its MD5)."""
        if self.put_if_absent(key, data):
            return True
        return self.stamp(key) == f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'

    @contextlib.contextmanager
    def lock(self, timeout_s: float, meanwhile: Callable[[], Any] | None = None) -> Iterator[Held]:
        """Hold the registry's lock (`Held`). `meanwhile` runs while the lock is being taken,
        and the `on_release` writes go out with its release: a round trip less each."""
        pool = ThreadPoolExecutor(max_workers=1) if meanwhile is not None else None
        try:
            early = pool.submit(meanwhile) if pool is not None and meanwhile is not None else None
            mine, lock_id = self._acquire(timeout_s)
        finally:
            if pool is not None:
                pool.shutdown()
        try:
            held = Held(None if early is None else early.result())
            yield held
        except BaseException:
            self._unlock(mine, lock_id)
            raise
        calls: list[Callable[[], object]] = [functools.partial(self._unlock, mine, lock_id)]
        together(calls + held.on_release)

    def _acquire(self, timeout_s: float) -> tuple[str, str]:
        """Take the lock: (its ETag, our id in it)."""
        ttl = float(os.environ.get("MLOPS_CI_LOCK_TTL", DEFAULT_LOCK_TTL_S))
        lock_id = uuid.uuid4().hex
        me = {"host": _machine(), "pid": os.getpid(), "id": lock_id}
        deadline = time.monotonic() + timeout_s
        while True:
            # `ttl`: how long the lock lasts, judged by the store's clock (`_held_lock`), since
            # the machines' clocks may disagree; `expires`, by ours, for a store without dates.
            body = json.dumps({**me, "expires": time.time() + ttl, "ttl": ttl}).encode()
            mine = self._conditional(LOCK_KEY, body)
            if mine is not None:
                break
            held = self._held_lock()
            if held is not None and _lock_id(held[0]) == lock_id:
                mine = held[1]  # ours: the create landed, its response was lost, the retry
                break  # met the condition
            if held is not None and _lock_is_stale(held[0], held[2]):
                # took over a dead holder's lock; the If-Match makes the takeover unique
                mine = self._conditional(LOCK_KEY, body, if_match=held[1])
                if mine is not None:
                    break
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"{self.uri}/{LOCK_KEY} is held by another deploy for more than "
                    f"{timeout_s:.0f} s"
                )
            time.sleep(0.02)
        return mine, lock_id

    def _held_lock(self) -> tuple[bytes, str, float | None] | None:
        """The lock's bytes, ETag and age in seconds by the store's own clock (its answer's
        Date less the lock's Last-Modified; None when it gives no dates). None: no lock."""
        resp = self._response(LOCK_KEY)
        if resp is None:
            return None
        try:
            written = email.utils.parsedate_to_datetime(resp.headers["last-modified"])
            now = email.utils.parsedate_to_datetime(resp.headers["date"])
            age: float | None = (now - written).total_seconds()
        except (KeyError, TypeError, ValueError):
            age = None
        return resp.body, resp.headers.get("etag", ""), age

    def _unlock(self, etag: str, me: str) -> None:
        """Delete the lock only if it is still ours: one conditional delete where the store
        has them (AWS, SeaweedFS, moto), else read, compare and delete."""
        from mlops_ci.s3 import S3Failure

        for attempt in range(5):
            try:
                self.client.delete(self._key(LOCK_KEY), if_match=etag)
                return
            except S3Failure as exc:
                if exc.status == 409 and attempt < 4:
                    # another conditional request on the lock (a waiter's create) is in
                    # flight: nothing was decided, so ask again (AWS's advice for a 409)
                    time.sleep(0.02 * (attempt + 1))
                    continue
                if exc.status != 409 and _condition_failed(exc):
                    return  # a deploy took it over after our TTL: it is theirs now
                if exc.status not in (400, 409, 501):  # 400/501: no conditional delete here
                    raise self._fail(exc, f"delete {LOCK_KEY}") from exc
                break  # still conflicting, or no conditional delete: read, compare, delete
        held = self.get(LOCK_KEY)
        if held is not None and _lock_id(held[0]) == me:
            self.delete(LOCK_KEY)

    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        kwargs: dict[str, Any] = {"region": self.region}
        if self.endpoint:
            url = urlparse(self.endpoint)
            kwargs["endpoint_override"] = url.netloc
            kwargs["scheme"] = url.scheme or "https"
        base = f"{self.bucket}/{self.prefix}".rstrip("/")
        return pyarrow.fs.S3FileSystem(**kwargs), base

    def child_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def moved_on(uri: str, key: str) -> RegistryError:
    """An append whose log no longer ends where its writer read it: a hash-chained record
    appended there would name the wrong predecessor and break the chain for good."""
    return RegistryError(
        f"{uri}/{key} moved on while this writer held the registry lock: another writer took "
        "the lock over (its TTL, MLOPS_CI_LOCK_TTL, ran out) or wrote without it. Nothing was "
        "appended; run again"
    )


def _absent(exc: s3.S3Failure) -> bool:
    """Whether an S3 error says the object is not there (and not, say, the bucket)."""
    return exc.code in ("NoSuchKey", "NotFound") or (exc.status == 404 and exc.code == "404")


def _condition_failed(exc: s3.S3Failure) -> bool:
    """Whether an S3 error says a conditional write's condition did not hold."""
    if exc.code == "NoSuchBucket":
        return False  # a missing bucket is a mistake to report, not a lost race
    # 412: the condition failed; 409: a concurrent conditional write is in flight; 404: If-Match
    # on an object that is gone.
    return exc.status in (404, 409, 412) or exc.code in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
        "NoSuchKey",
    )


@functools.cache
def _machine() -> str:
    """Where a pid means this process table: the host name, this boot of the kernel and this
    pid namespace. A host name alone is not enough: two runners or containers can share one,
    and a pid that is dead here may be a live deploy there."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _lock_id(body: bytes) -> str | None:
    """The id of a lock's holder (None: unreadable)."""
    try:
        held = json.loads(body)
    except ValueError:
        return None
    value = held.get("id") if isinstance(held, dict) else None
    return value if isinstance(value, str) else None


def _lock_is_stale(body: bytes, age: float | None = None) -> bool:
    """A lock whose holder is gone: past its expiry, or a dead process on this very machine
    (the same host, boot and pid namespace; anything else waits for the expiry). `age`: the
    lock's age by the store's clock; with it, the expiry is its `ttl` on that one clock, so a
    holder's clock behind ours (or ours ahead) does not expire a lock still held."""
    try:
        held = json.loads(body)
        ttl = held.get("ttl") if isinstance(held, dict) else None
        if age is not None and isinstance(ttl, int | float) and not isinstance(ttl, bool):
            if age > ttl:
                return True
        elif time.time() > float(held["expires"]):
            return True
        if held.get("host") == _machine():
            os.kill(int(held["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, PermissionError):
        return False
    return False


T = TypeVar("T")


def together(calls: Sequence[Callable[[], T]], threads: int | None = None) -> list[T]:
    """The results of `calls`, run at once and started in argument order (so pass the longest
    first): all but the last in up to `threads` threads, the last in this thread (one thread
    fewer to start and to hand its result back). The first failure in argument order is
    raised, once every call has ended."""
    if len(calls) < 2:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(threads or len(calls), len(calls) - 1)) as pool:
        futures = [pool.submit(call) for call in calls[:-1]]
        try:
            last = calls[-1]()
        except BaseException:
            wait(futures)
            for future in futures:
                if future.exception() is not None:
                    future.result()  # an earlier call's failure comes first
            raise
        return [*(future.result() for future in futures), last]


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionFolders:
    """A model's numbered folders, as one listing saw them."""

    numbers: list[int]  # whole versions (marked, or holding all of VERSION_FILES), ascending
    highest: int  # the highest numbered folder, complete or not (0: none)
    semvers: dict[int, str]  # the semver of each complete version (when it could be read)
    marked: frozenset[int]  # the versions that have their release marker
    #: the files beside the version folders, with the tags the listing gave them
    tags: dict[str, str] = field(default_factory=dict, compare=False)
    #: the audit record each unmarked version's release.json names (read for the listing)
    anchors: dict[int, str] = field(default_factory=dict, compare=False)

    def without(self, n: int) -> VersionFolders:
        """This listing once version n stops being one (its number stays taken)."""
        semvers = {k: v for k, v in self.semvers.items() if k != n}
        return VersionFolders(
            [k for k in self.numbers if k != n],
            self.highest,
            semvers,
            self.marked - {n},
            self.tags,
            {k: v for k, v in self.anchors.items() if k != n},
        )


class Registry:
    """Storage primitives plus the model view of DESIGN.md's "Registry" layout."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.uri = store.uri

    # storage primitives ------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes | None:
        got = self.store.get(key)
        return None if got is None else got[0]

    def write_bytes(self, key: str, data: bytes) -> None:
        self.store.put(key, data)

    def read_log(self, key: str) -> bytes | None:
        """A log that `store.append` writes, whole (on S3 it is kept in segments)."""
        return self.store.read_log(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return self.store.list(prefix)

    def model_keys(self) -> list[str]:
        """Every key in a model folder, sorted, without listing `.mlops/` (the prediction log:
        a file per model, day and flush, so millions of objects on S3)."""
        return self.store.model_keys()

    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        return self.store.arrow_fs()

    def gather(self, *reads: Callable[[], Any]) -> list[Any]:
        """The results of independent calls (reads, or writes whose order does not matter):
        together on S3 (their round trips overlap; started in argument order, so the longest
        goes first), one after the other on a folder. The first failure in argument order is
        raised, once every call has ended."""
        if not self.store.concurrent:
            return [read() for read in reads]
        return together(reads)

    def exists(self) -> bool:
        """Whether the registry is there: a folder must exist (an S3 prefix always does; a
        missing bucket is an error at the first read)."""
        return not isinstance(self.store, FileStore) or self.store.root.is_dir()

    def uri_of(self, key: str) -> str:
        """The absolute URI of a key (`file://…` or `s3://…`), e.g. KServe's storageUri."""
        return self.store.child_uri(key)

    # the model view ----------------------------------------------------------------------------

    def models(self) -> list[str]:
        return sorted(key.split("/")[0] for key in self.store.configs())

    def config_text(self, model: str) -> str | None:
        data = self.read_bytes(f"{model}/config.pbtxt")
        return None if data is None else data.decode("utf-8")

    def serving_version(self, model: str) -> int | None:
        from mlops_ci import triton

        text = self.config_text(model)
        if text is None:
            return None
        try:
            return triton.serving_version(text)
        except ValueError as exc:
            raise RegistryError(f"{self.uri_of(model + '/config.pbtxt')}: {exc}") from exc

    def versions(self, model: str) -> list[int]:
        """The model's published versions: whole, and recorded in the audit log. A version that
        a deploy staged and has not recorded (one under way, or one killed between the two) is
        none here, so it is neither served by path nor rolled back to; `version_folders` still
        lists it, for the deploy that completes or retires it and for `audit verify`. The
        version that `config.pbtxt` names is one whatever the log says."""
        return self.published(model, self.version_folders(model))

    def published(self, model: str, folders: VersionFolders) -> list[int]:
        """`versions`, from a listing of the model's folder already made. A version without
        its marker that does not serve is asked of the log: its end first, then the whole log
        (a listing where every version has its marker costs nothing more)."""
        unmarked = [n for n in folders.numbers if n not in folders.marked]
        if not unmarked:  # the usual case: every version has its marker, written once recorded
            return folders.numbers
        asked = set(unmarked)
        # What config.pbtxt names serves whatever the log says: a deploy writes it only after
        # the record (it names an unrecorded version only in a registry written by hand). Asked
        # first: right after a deploy, the new version serves before it has its marker.
        with contextlib.suppress(RegistryError):
            asked.discard(self.serving_version(model))
        if not asked:
            return folders.numbers
        unrecorded = asked - set(self.recorded(sorted(asked), folders.anchors))
        return [n for n in folders.numbers if n not in unrecorded]

    def recorded(self, ns: list[int], anchors: Mapping[int, str]) -> list[int]:
        """Those of versions `ns` whose audit record (`anchors`: the sha256 each release.json
        names) is in the log: the log's end is asked first, the whole log only for a record
        not found there."""
        from mlops_ci import audit

        found = audit.recorded_among(self, {anchors[n] for n in ns if n in anchors})
        return [n for n in ns if anchors.get(n) in found]

    def version_folders(self, model: str) -> VersionFolders:
        """The model's version folders, from one listing of its folder: the release markers
        answer for the versions that have one (written once a version is whole and recorded);
        the others (none, unless a kill, a publish under way or a hand left one unmarked) are
        versions when all of VERSION_FILES are there, and their release.json is read."""
        folders, files = self.store.folder(model)
        numbered = sorted(int(name) for name in folders if VERSION_DIR.fullmatch(name))
        marked = {}
        for name in files:
            if m := RELEASE_MARKER.fullmatch(name):
                marked[int(m.group(1))] = m.group(2)
        semvers = {n: marked[n] for n in numbered if n in marked}
        unmarked = [n for n in numbered if n not in marked]
        complete = set(semvers)
        anchors = {}
        for n, data in zip(unmarked, self._whole_releases(model, unmarked), strict=True):
            if data is None:
                continue  # incomplete: its number is taken, it is no version
            complete.add(n)
            semver, anchor = _release_keys(data)  # unreadable: asked again on use
            if semver is not None:
                semvers[n] = semver
            if anchor is not None:
                anchors[n] = anchor
        return VersionFolders(
            sorted(complete),
            numbered[-1] if numbered else 0,
            semvers,
            frozenset(marked) & complete,
            files,
            anchors,
        )

    def _whole_releases(self, model: str, ns: list[int]) -> list[bytes | None]:
        """release.json of each version n that holds all of VERSION_FILES, else None: on S3 a
        version's objects are created together, so release.json alone says nothing (a kill,
        or a publish under way, can leave it without the others)."""
        calls: list[Callable[[], bytes | str | None]] = []
        for n in ns:
            calls.append(functools.partial(self.read_bytes, f"{model}/{n}/release.json"))
            calls.extend(
                functools.partial(self.store.stamp, f"{model}/{n}/{name}")
                for name in VERSION_FILES
                if name != "release.json"
            )
        # A registry written before the markers has every version unmarked: 16 at a time.
        got = together(calls, threads=15) if self.store.concurrent else [c() for c in calls]
        per = len(VERSION_FILES)
        out: list[bytes | None] = []
        for i in range(len(ns)):
            release, *others = got[i * per : (i + 1) * per]
            whole = all(other is not None for other in others)
            out.append(release if isinstance(release, bytes) and whole else None)
        return out

    def release(self, model: str, n: int) -> dict[str, Any]:
        return self._release_doc(model, n, self.read_bytes(f"{model}/{n}/release.json"))

    def find_release(self, model: str, n: int, *, whole: bool = False) -> dict[str, Any] | None:
        """release.json of version n; None when there is none (one read: asking for one
        version costs the same however many the model has). `whole`: None too unless the
        folder holds all of VERSION_FILES (asked together with the read, on S3)."""
        data = (
            self._whole_releases(model, [n])[0]
            if whole
            else self.read_bytes(f"{model}/{n}/release.json")
        )
        return None if data is None else self._release_doc(model, n, data)

    def releases(self, model: str, ns: list[int]) -> list[dict[str, Any]]:
        """`release(model, n)` for each n, fetched together (concurrently on S3)."""
        got = self.store.get_many([f"{model}/{n}/release.json" for n in ns])
        return [self._release_doc(model, n, data) for n, data in zip(ns, got, strict=True)]

    def _release_doc(self, model: str, n: int, data: bytes | None) -> dict[str, Any]:
        key = f"{model}/{n}/release.json"
        if data is None:
            raise RegistryError(f"{self.uri}: {model} has no version {n}")
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise RegistryError(f"{self.uri_of(key)}: not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise RegistryError(f"{self.uri_of(key)}: not a JSON object")
        return doc

    def manifest_text(self, model: str, n: int) -> str:
        data = self.read_bytes(f"{model}/{n}/model.yaml")
        if data is None:
            raise RegistryError(f"{self.uri}: {model} version {n} has no model.yaml")
        return data.decode("utf-8")

    def model_onnx(self, model: str, n: int, release: dict[str, Any] | None = None) -> bytes:
        """model.onnx of version n, checked against the digest its release.json names (pass
        the release when it has just been read: it is not read again)."""
        release = self.release(model, n) if release is None else release
        expected = (release.get("onnx") or {}).get("sha256")
        data = self.read_bytes(f"{model}/{n}/model.onnx")
        if data is None:
            raise RegistryError(f"{self.uri}: {model} version {n} has no model.onnx")
        actual = sha256_hex(data)
        if actual != expected:
            raise RegistryError(
                f"{self.uri_of(f'{model}/{n}/model.onnx')}: sha256 {actual} does not match "
                f"release.json ({expected}); refusing to use it"
            )
        return data

    def state_token(self, model: str) -> str:
        """What changes whenever the model's config.pbtxt is written (a deploy, a rollback)."""
        return self.store.change_stamp(f"{model}/config.pbtxt") or ""


def _release_keys(data: bytes) -> tuple[str | None, str | None]:
    """The semver and the audit record's sha256 a release.json names (None: not there)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    semver, anchor = doc.get("version"), doc.get("audit")
    sha = anchor.get("sha256") if isinstance(anchor, dict) else None
    return (
        semver if isinstance(semver, str) else None,
        sha if isinstance(sha, str) else None,
    )


def open_registry(uri: str | Path) -> Registry:
    """A registry from a folder path, `file:///abs/path` or `s3://bucket/prefix`."""
    text = str(uri)
    if not text.strip():
        raise RegistryError("the registry is empty: give a folder, file:///path or s3://…")
    if text.startswith("s3://"):
        # Split by hand, as the AWS CLI and Triton read s3://: a key may hold '#' and '?',
        # which urlparse would cut off as a fragment or query (s3://b#x/p was the bucket's root).
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise RegistryError(f"{text}: an S3 registry is s3://bucket/prefix")
        try:
            return Registry(S3Store(bucket, prefix))
        except ImportError as exc:
            raise RegistryError(
                "an s3:// registry needs mlops-ci's s3 extra: pip install 'mlops-ci[s3]'"
            ) from exc
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise RegistryError(f"{text}: file:// URIs name a local folder (file:///abs/path)")
        if parsed.query or parsed.fragment or text.endswith(("?", "#")):
            # a query or fragment is no part of the folder: it was a folder's '?' or '#'
            raise RegistryError(
                f"{text}: a file:// URI names a folder, with no query or fragment; write '?' "
                "as %3F and '#' as %23 (or give the folder's path)"
            )
        text = unquote(parsed.path)  # as Path.as_uri() wrote it: "%20" is a space
        if "\x00" in text:  # "%00": no path holds one (the OS would refuse it as an internal error)
            raise RegistryError(f"{uri}: a folder's path holds no NUL character (%00)")
    elif "://" in text:
        raise RegistryError(f"{text}: a registry is a folder, file:///path or s3://bucket/prefix")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise RegistryError(f"{path}: the registry must be a folder")
    return Registry(FileStore(path))
