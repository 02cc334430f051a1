"""The counters of `serve --workers N` summed over the workers: each worker keeps a snapshot file of
its counters in a folder the parent process made, and a scrape adds up every snapshot.

The parent creates the folder (private, under the temp dir) before forking and removes it on
shutdown. A worker writes its snapshot (JSON, beside then renamed, so a reader never sees half of
one) every `SYNC_S` seconds when its counters moved, at each scrape it answers (before reading the
others), and on a clean stop. Files are named by pid and a random tag and are never deleted while
the server runs, so a worker that dies or is restarted keeps its last counts in the sum.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_ci import atomic

log = logging.getLogger("mlops_ci.serve")

#: How often a worker's snapshot is brought up to date: the most another worker's scrape lags.
SYNC_S = 1.0
#: An idle worker still rewrites its snapshot this often, so a temp-dir cleaner that deletes
#: old files (systemd-tmpfiles: 10 days) never takes a live worker's counts away.
REFRESH_S = 3600.0

Snapshot = dict[str, Any]


class SharedCounters:
    """This worker's side of the folder: `publish` its snapshot, `gather` everyone's."""

    def __init__(self, folder: str | Path, sync_s: float = SYNC_S) -> None:
        self.folder = Path(folder)
        # The random tag: a restarted worker may get a dead one's pid, and must not overwrite
        # the dead one's counts.
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}.json"
        self._sync_s = sync_s
        self._lock = threading.Lock()
        self._written = b""
        self._written_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, take: Callable[[], Snapshot]) -> None:
        """Publish now, then every `sync_s` seconds from a background thread."""
        self.publish(take)
        self._thread = threading.Thread(
            target=self._loop, args=(take,), name="shared-counters", daemon=True
        )
        self._thread.start()

    def stop(self, take: Callable[[], Snapshot]) -> None:
        """Stop the thread and publish the final counts (a clean stop loses nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.publish(take)

    def _loop(self, take: Callable[[], Snapshot]) -> None:
        while not self._stop.wait(self._sync_s):
            self.publish(take)

    def publish(self, take: Callable[[], Snapshot]) -> Snapshot:
        """Take this worker's counters and write them, as one step: the lock keeps the thread and
        a scrape from renaming an older snapshot over a newer one."""
        with self._lock:
            snapshot = take()
            data = json.dumps(snapshot, separators=(",", ":")).encode()
            now = time.monotonic()
            if data == self._written and now - self._written_at < REFRESH_S:
                return snapshot
            try:  # written beside and renamed: a reader never sees half of one
                atomic.write_bytes(self.folder / self.name, data)
            except OSError as exc:  # the scrape still answers, with this worker's counts
                log.error("metrics: cannot write %s: %s", self.folder / self.name, exc)
            else:
                self._written, self._written_at = data, now
            return snapshot

    def gather(self, take: Callable[[], Snapshot]) -> list[Snapshot]:
        """Every worker's counters, in file-name order: this worker's live ones, published first
        so that no later scrape on another worker can see less than this one reports, and the
        others' last snapshots."""
        found = {self.name: self.publish(take)}
        try:
            paths = [p for p in self.folder.iterdir() if p.suffix == ".json"]
        except OSError as exc:
            log.error("metrics: cannot list %s: %s", self.folder, exc)
            paths = []
        for path in paths:
            if path.name == self.name:
                continue
            try:
                found[path.name] = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:  # only our workers write here, whole files
                log.error("metrics: skipping %s: %s", path, exc)
        return [found[name] for name in sorted(found)]


#: The shared folders' names: `<PREFIX><pid namespace>-<pid of the serving parent>-<random>`.
PREFIX = "mlops-ci-serve-metrics-"


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def make_folder(tmp: str | None = None) -> str:
    """A private folder (0700) for this server's workers, after removing the ones that servers
    killed with SIGKILL left behind (their `finally` never ran)."""
    import tempfile

    sweep_orphans(tmp or tempfile.gettempdir())
    return tempfile.mkdtemp(prefix=f"{PREFIX}{_pid_namespace()}-{os.getpid()}-", dir=tmp)


def sweep_orphans(tmp: str) -> list[str]:
    """Remove the shared folders whose serving parent is dead: ours (same user), from this pid
    namespace (a pid means nothing in another one, e.g. a container sharing /tmp). A reused pid
    keeps its folder: a leak, never a live server's counts lost."""
    import shutil

    removed: list[str] = []
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return removed
    namespace = _pid_namespace()
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        parts = entry.name[len(PREFIX) :].split("-")
        if len(parts) < 3 or parts[0] != namespace or not parts[1].isdigit():
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or not entry.is_dir(
                follow_symlinks=False
            ):
                continue
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
        except OSError:  # no such entry any more, or a live process of another user
            continue
    return removed
