"""The registry's storage primitives and model view, on a folder, SeaweedFS and moto."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mlops_ci import triton
from mlops_ci.registry import RegistryError, VersionFolders, open_registry

T = triton.Tensor


def _publish(reg, model: str, n: int, onnx: bytes = b"onnx-bytes") -> None:
    release = {
        "model": model,
        "registry_version": n,
        "version": f"{n}.0.0",
        "onnx": {"sha256": hashlib.sha256(onnx).hexdigest()},
    }
    reg.store.put_folder(
        f"{model}/{n}",
        {
            "model.onnx": onnx,
            "model.yaml": b"name: x\n",
            "release.json": json.dumps(release).encode(),
        },
    )
    cfg = triton.build(model, [T("x", "float32", (-1, 2))], [T("y", "float32", (-1,))], n)
    reg.write_bytes(f"{model}/config.pbtxt", triton.to_text(cfg).encode())


def _together(fn: Callable[[int], object], n: int) -> None:
    """fn(0) … fn(n - 1), each in its own thread, all started before any is waited for."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_bytes_round_trip_and_listing(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    assert reg.read_bytes("a/b.txt") is None
    reg.write_bytes("a/b.txt", b"one")
    reg.write_bytes("a/c/d.bin", b"\x00two")
    reg.write_bytes("z.txt", b"3")
    assert reg.read_bytes("a/b.txt") == b"one"
    assert reg.list_keys("") == ["a/b.txt", "a/c/d.bin", "z.txt"]
    assert reg.list_keys("a") == ["a/b.txt", "a/c/d.bin"]
    assert reg.list_keys("a/c") == ["a/c/d.bin"]
    assert reg.list_keys("nothing") == []
    reg.write_bytes("a/b.txt", b"replaced")
    assert reg.read_bytes("a/b.txt") == b"replaced"


def test_model_keys_and_audit_verify_never_list_the_prediction_log(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prediction log grows by a file per model, day and flush (millions of objects, a
    thousand S3 LIST requests per million): what reads the model folders lists none of it."""
    from mlops_ci import audit
    from mlops_ci.registry import FileStore, S3Store

    reg = open_registry(registry_uri)
    _publish(reg, "a-b", 1)
    _publish(reg, "a", 1)
    reg.write_bytes("a/2/release.json", b"{}")
    reg.write_bytes(".mlops/predictions/a/date=2026-12-01/part-0.parquet", b"PAR1")
    reg.write_bytes(".hidden/x", b"")
    reg.write_bytes("README", b"a file beside the models")
    listed: list[str] = []
    for store in (FileStore, S3Store):

        def recording(self: object, *args: object, _list=store.list, **kwargs: object) -> object:
            keys = _list(self, *args, **kwargs)
            listed.extend(keys)
            return keys

        monkeypatch.setattr(store, "list", recording)
    files = ["config.pbtxt", "1/model.onnx", "1/model.yaml", "1/release.json"]
    assert reg.model_keys() == sorted(
        [f"a-b/{f}" for f in files] + [f"a/{f}" for f in files] + ["a/2/release.json"]
    )
    assert audit.verify(reg).records == 0
    assert listed and not [key for key in listed if key.startswith(".")]


def test_model_view(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    assert reg.models() == []
    assert reg.serving_version("m") is None
    _publish(reg, "m", 1, b"first")
    _publish(reg, "m", 2, b"second")
    _publish(reg, "other", 1)
    reg.write_bytes(".mlops/predictions/m/config.pbtxt", b"not a model")
    reg.write_bytes("no-config/1/release.json", b"{}")
    assert reg.models() == ["m", "other"]
    assert reg.version_folders("m").numbers == [1, 2]
    assert reg.serving_version("m") == 2
    assert reg.model_onnx("m", 1) == b"first"
    assert reg.release("m", 2)["registry_version"] == 2
    assert reg.manifest_text("m", 1) == "name: x\n"
    with pytest.raises(RegistryError, match="no version 3"):
        reg.release("m", 3)


def test_a_changed_model_onnx_is_refused_on_read(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    _publish(reg, "m", 1, b"approved")
    reg.write_bytes("m/1/model.onnx", b"swapped")
    with pytest.raises(RegistryError, match=r"does not match release\.json"):
        reg.model_onnx("m", 1)


def test_state_token_changes_when_config_changes(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    assert reg.state_token("m") == ""
    _publish(reg, "m", 1)
    first = reg.state_token("m")
    assert first == reg.state_token("m")
    text = reg.config_text("m")
    assert text is not None
    reg.write_bytes("m/config.pbtxt", triton.with_version(text, 7).encode())
    assert reg.state_token("m") not in ("", first)
    assert reg.serving_version("m") == 7


def test_state_token_changes_when_the_same_config_is_written_again(registry_uri: str) -> None:
    """A registry replaced under a running server writes the very same config.pbtxt again: on
    S3 its ETag (the MD5 of its bytes) stays the same, so the token also holds when it was
    written (to the second, as S3 says it): the server must look at the model again."""
    reg = open_registry(registry_uri)
    _publish(reg, "m", 1)
    text = reg.read_bytes("m/config.pbtxt")
    assert text is not None
    first, etag = reg.state_token("m"), reg.store.stamp("m/config.pbtxt")
    time.sleep(1.1)  # Last-Modified counts seconds
    reg.write_bytes("m/config.pbtxt", text)
    assert reg.store.stamp("m/config.pbtxt") == etag or not reg.store.concurrent
    assert reg.state_token("m") != first


def test_versions_ignore_incomplete_folders(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    _publish(reg, "m", 1)
    reg.write_bytes("m/2/model.onnx", b"no release.json yet")
    reg.write_bytes("m/notaversion/release.json", b"{}")
    reg.write_bytes("m/07/release.json", b"{}")  # Triton reads no leading zero as a version
    assert reg.version_folders("m").numbers == [1]
    # The next number goes past the incomplete folder: numbers only grow. Version 1 has no
    # release marker: its release.json was read.
    assert reg.version_folders("m") == VersionFolders([1], 2, {1: "1.0.0"}, frozenset())
    reg.write_bytes("m/.release-1-1.0.1", b"")  # the marker answers, unread
    reg.write_bytes("m/.release-3-3.0.0", b"")  # a marker without its folder names nothing
    reg.write_bytes("m/1/.release-9-9.0.0", b"")  # nor one inside a version folder
    assert reg.version_folders("m") == VersionFolders([1], 2, {1: "1.0.1"}, frozenset({1}))
    assert [r["registry_version"] for r in reg.releases("m", [1])] == [1]
    with pytest.raises(RegistryError, match="has no version 2"):
        reg.releases("m", [1, 2])


def test_versions_without_markers_are_asked_sixteen_at_a_time(registry_uri: str) -> None:
    """A registry written before the release markers has every version unmarked: each is asked
    its three objects, 16 requests at a time, not one thread per request (150 here)."""
    import threading

    reg = open_registry(registry_uri)
    for n in range(1, 51):
        _publish(reg, "m", n)
    stamp, peak = reg.store.stamp, [0]

    def counting(key: str) -> str | None:
        pools = sum(t.name.startswith("ThreadPoolExecutor") for t in threading.enumerate())
        peak[0] = max(peak[0], pools)
        return stamp(key)

    reg.store.stamp = counting  # type: ignore[method-assign]
    assert reg.version_folders("m").numbers == list(range(1, 51))
    assert peak[0] <= 15


def test_large_files_are_written_whole(registry_uri: str) -> None:
    """Writes go out in WRITE_CHUNK pieces (bench/deploy.py shows why): every byte lands, at
    sizes on and around the chunk boundary."""
    from mlops_ci import atomic

    reg = open_registry(registry_uri)
    chunk = atomic.WRITE_CHUNK
    for i, size in enumerate((chunk - 1, chunk, 3 * chunk + 7)):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        reg.write_bytes(f"big/{i}.bin", data)
        _publish(reg, f"m{i}", 1, data)
        assert reg.read_bytes(f"big/{i}.bin") == data
        assert reg.model_onnx(f"m{i}", 1) == data


def test_a_version_folder_is_never_overwritten(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    _publish(reg, "m", 1, b"first")
    with pytest.raises(RegistryError, match="never overwritten"):
        reg.store.put_folder("m/1", {"model.onnx": b"x", "release.json": b"{}"})
    assert reg.model_onnx("m", 1) == b"first"


@pytest.mark.parametrize("empty", [False, True], ids=["bytes", "empty (a release marker)"])
def test_exactly_one_of_eight_racing_creators_wins(registry_uri: str, empty: bool) -> None:
    reg = open_registry(registry_uri)
    start = threading.Barrier(8)
    wins: list[int] = []

    def race(i: int) -> None:
        store = open_registry(registry_uri).store
        start.wait()
        if store.put_if_absent("race/key", b"" if empty else str(i).encode()):
            wins.append(i)

    _together(race, 8)
    assert len(wins) == 1
    assert reg.read_bytes("race/key") == (b"" if empty else str(wins[0]).encode())
    assert not reg.store.put_if_absent("race/key", b"")


def test_exactly_one_of_eight_racing_replacers_wins(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    reg.write_bytes("race/key", b"start")
    got = reg.store.get("race/key")
    assert got is not None
    start = threading.Barrier(8)
    wins: list[int] = []

    def race(i: int) -> None:
        store = open_registry(registry_uri).store
        start.wait()
        if store.put_if_match("race/key", str(i).encode(), got[1]):
            wins.append(i)

    _together(race, 8)
    assert len(wins) == 1
    assert reg.read_bytes("race/key") == str(wins[0]).encode()


@pytest.mark.parametrize("segment_lines", [None, 2], ids=["one-segment", "segments-of-2"])
def test_appends_from_racing_writers_are_all_kept(
    registry_uri: str, segment_lines: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every line lands exactly once, also when the racers cross S3 segment boundaries (each
    segment is replaced with If-Match or created with If-None-Match: one racer wins each)."""
    from mlops_ci import registry

    if segment_lines:
        monkeypatch.setattr(registry, "SEGMENT_LINES", segment_lines)

    def write(i: int) -> None:
        store = open_registry(registry_uri).store
        for j in range(4):
            store.append("log.jsonl", f"{i}-{j}\n".encode())

    _together(write, 6)
    reg = open_registry(registry_uri)
    data = reg.read_log("log.jsonl")
    assert data is not None
    assert sorted(data.decode().split()) == sorted(f"{i}-{j}" for i in range(6) for j in range(4))
    if segment_lines and registry_uri.startswith("s3://"):
        segments = [k for k in reg.list_keys("") if k.startswith("log.jsonl")]
        assert len(segments) == 12
        assert all((reg.read_bytes(k) or b"").count(b"\n") == 2 for k in segments)


def test_the_lock_serialises_holders(registry_uri: str) -> None:
    inside = []
    overlap = []

    def hold(i: int) -> None:
        with open_registry(registry_uri).store.lock(timeout_s=60):
            if inside:
                overlap.append(i)
            inside.append(i)
            time.sleep(0.02)  # long enough for an unlocked holder to be overlapped
            inside.remove(i)

    _together(hold, 6)
    assert overlap == []


def test_a_taken_over_s3_lock_is_not_released_by_its_first_holder(
    s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder that outlives its TTL loses the lock to the next deploy; when it finishes, its
    release must leave the new holder's lock in place (a plain delete would free it for a
    third deploy while the second still writes)."""
    from mlops_ci.registry import LOCK_KEY

    monkeypatch.setenv("MLOPS_CI_LOCK_TTL", "0.3")
    uri = s3_server.fresh_uri()
    first, second = open_registry(uri), open_registry(uri)
    first_inside, second_inside, first_done = (threading.Event() for _ in range(3))
    held_after_first: list[bytes | None] = []

    def slow_holder() -> None:
        with first.store.lock(timeout_s=10):
            first_inside.set()
            second_inside.wait(10)  # outlive the TTL until the second deploy takes over
        first_done.set()

    thread = threading.Thread(target=slow_holder)
    thread.start()
    first_inside.wait(10)
    with second.store.lock(timeout_s=10):
        second_inside.set()
        first_done.wait(10)
        held_after_first.append(second.read_bytes(LOCK_KEY))
    thread.join()
    assert held_after_first[0] is not None, "the first holder freed the second holder's lock"
    assert second.read_bytes(LOCK_KEY) is None  # the second holder released its own


def test_an_s3_lock_expires_by_the_store_s_clock_not_its_holder_s(
    s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder whose clock runs an hour behind (or a deploy whose clock runs ahead) wrote an
    expiry every other machine saw as past: its lock was taken over at once while it still
    wrote. The lock's age is the store's Date less its Last-Modified, one clock."""
    import contextlib

    from mlops_ci import registry

    uri = s3_server.fresh_uri()
    first, second = open_registry(uri), open_registry(uri)
    real = time.time
    with contextlib.ExitStack() as held:
        monkeypatch.setattr(registry.time, "time", lambda: real() - 3600)
        held.enter_context(first.store.lock(timeout_s=5))
        monkeypatch.setattr(registry.time, "time", real)
        with (
            pytest.raises(RegistryError, match="held by another deploy"),
            second.store.lock(timeout_s=1.5),
        ):
            pass


def test_an_s3_lock_is_broken_early_only_for_a_dead_process_of_this_very_machine() -> None:
    """Before its expiry, a lock is taken over only when its holder's pid is dead in this
    process table: the same host name on another machine or container says nothing."""
    import socket
    import subprocess
    import sys
    import time

    from mlops_ci.registry import _lock_is_stale, _machine

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid, later = int(dead.stdout), time.time() + 600

    def body(host: str, pid: int, expires: float = later) -> bytes:
        return json.dumps({"host": host, "pid": pid, "expires": expires, "id": "x"}).encode()

    assert _lock_is_stale(body(_machine(), pid))  # a dead holder here: no need to wait
    assert not _lock_is_stale(body(_machine(), os.getpid()))  # a live one
    # The same host name, another boot or pid namespace: that pid may be alive there.
    assert not _lock_is_stale(body(socket.gethostname(), pid))
    assert not _lock_is_stale(body(socket.gethostname() + "/another-boot/1", pid))
    assert _lock_is_stale(body("elsewhere", pid, expires=time.time() - 1))  # expired: anyone


def test_invalid_keys_are_refused(tmp_path: Path) -> None:
    reg = open_registry(tmp_path)
    for key in ("../escape", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(RegistryError, match="invalid registry key"):
            reg.write_bytes(key, b"x")
    assert not (tmp_path.parent / "escape").exists()


def test_registry_files_are_readable_by_the_server_account(tmp_path: Path) -> None:
    """Triton, KServe's storage initializer and a web server often run as another user: every
    file a publish writes is rw-r--r-- (atomic.FILE_MODE), never mkstemp's private 0600."""
    import os
    import stat

    from deploy_models import candidate

    from mlops_ci import atomic, deploy

    old = os.umask(0o022)  # the usual umask, under which open() gives 0644
    try:
        reg = open_registry(tmp_path / "r")
        deploy.publish(reg, candidate(), deploy.Provenance(source="local", actor="t"))
        assert reg.store.put_if_absent("m/created-once", b"x")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file() and p.name != "lock"]
    modes = {
        p.relative_to(tmp_path / "r").as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files
    }
    assert {"iris/config.pbtxt", "iris/1/model.onnx", ".mlops/audit.head", "m/created-once"} <= set(
        modes
    )
    assert {k: v for k, v in modes.items() if v != atomic.FILE_MODE} == {}


def test_uris(tmp_path: Path) -> None:
    assert open_registry(tmp_path.as_uri()).uri == tmp_path.resolve().as_uri()
    with pytest.raises(RegistryError, match="folder, file:///path or s3://"):
        open_registry("gs://bucket/x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match="must be a folder"):
        open_registry(tmp_path / "file")


def test_a_uri_s_hash_or_question_mark_is_never_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """urlparse reads '#' and '?' as a fragment and a query: s3://b/a#b opened the prefix "a",
    s3://b#x/p the bucket's root, file:///x#y the folder /x; a deploy then wrote elsewhere."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    # S3 keys may hold both (the AWS CLI and Triton read the URI literally): so do we
    for uri in ("s3://b/a#b", "s3://b/a?x=1", "s3://b/my models/reg%20x"):
        assert open_registry(uri).uri == uri
    for uri in ("s3://b#x/p", "s3://b?x", "s3:///p", "s3://user@b/p"):
        with pytest.raises(RegistryError, match="s3://bucket/prefix"):
            open_registry(uri)
    folder = tmp_path / "a#b?c"
    assert open_registry(folder.as_uri()).store.root == folder  # '#' and '?' encoded: fine
    for uri in (f"{tmp_path.as_uri()}/x#y", f"{tmp_path.as_uri()}/x?y", f"{tmp_path.as_uri()}#"):
        with pytest.raises(RegistryError, match="no query or fragment"):
            open_registry(uri)
    with pytest.raises(RegistryError, match="no NUL"):  # was ValueError: an internal error
        open_registry(f"{tmp_path.as_uri()}/a%00b")


def test_a_registrys_own_uri_opens_the_same_folder(tmp_path: Path) -> None:
    """The smoke test serves `reg.uri`, which Path.as_uri() percent-encodes: a registry in a
    folder with a space was reopened as a folder named with "%20", and the deploy rolled back."""
    folder = tmp_path / "my models" / "registry"
    reg = open_registry(folder)
    _publish(reg, "m", 1)
    assert "%20" in reg.uri
    for uri in (reg.uri, "file://localhost" + folder.as_posix()):
        again = open_registry(uri)
        assert again.exists() and again.serving_version("m") == 1
    assert not open_registry(tmp_path / "nothing").exists()


def test_unreachable_s3_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from s3servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    reg = open_registry("s3://bucket/prefix")
    with pytest.raises(RegistryError, match="s3://bucket/prefix: cannot read"):
        reg.read_bytes("m/config.pbtxt")


def test_wrong_credentials_are_refused_by_seaweedfs(
    seaweedfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = seaweedfs.fresh_uri()
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(RegistryError, match="cannot write"):
        open_registry(uri).write_bytes("k", b"x")


def test_arrow_fs_reads_what_the_registry_wrote(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    reg.write_bytes(".mlops/predictions/m/part.txt", b"hello")
    fs, base = reg.arrow_fs()
    with fs.open_input_stream(f"{base}/.mlops/predictions/m/part.txt") as fh:
        assert fh.read() == b"hello"
