"""The S3 publish path that writes a version's objects together (a round trip less).

On S3 `release.json` can exist without `model.onnx` or `model.yaml`: during every publish (the
tiny release.json lands first) and for good after a kill inside the folder's write. A version is
therefore a folder with its release marker or with all of `registry.VERSION_FILES`, never one
with release.json alone. These tests put every reader (the registry's model view, the catalog,
serve, rollback, a later publish) in front of such a folder, on every backend; each failed
before that rule (found by a review of the change). On a folder registry the version folder is
staged and renamed whole, and the same tests say what S3 must do too.

The other tests pin what the same commits got right (the head read while the lock is taken, the
marker written with the lock's release, the InferenceService's ETag, `registry.together`).
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import yaml
from deploy_models import LOCAL, candidate, publish_at_once

from mlops_ci import atomic, audit, deploy, registry
from mlops_ci.catalog.read import listing
from mlops_ci.deploy import Candidate
from mlops_ci.errors import MlopsCiError
from mlops_ci.registry import Registry, RegistryError, open_registry, together


class _Killed(BaseException):
    """Raised where a kill -9 would stop the deploy (no handler catches it)."""


def _killed_inside_folder_write(
    reg: Registry, monkeypatch: pytest.MonkeyPatch, cand: Candidate, n: int, lost: set[str]
) -> None:
    """Publish `cand` as version n and stop it inside the version folder's write: the objects
    in `lost` never land, the others do (on S3 they are created together; on a folder the
    staging folder is never renamed)."""
    with monkeypatch.context() as patch:
        if isinstance(reg.store, registry.S3Store):
            put_if_absent = reg.store.put_if_absent

            def create(key: str, data: bytes) -> bool:
                *_, folder, name = key.split("/")
                if folder == str(n) and name in lost:
                    raise _Killed(key)
                return put_if_absent(key, data)

            patch.setattr(reg.store, "put_if_absent", create)
        else:
            write_all = atomic.write_all
            doomed = {"model.onnx": cand.onnx, "model.yaml": cand.manifest_text}
            stop = [doomed[name] for name in lost]

            def write(fd: int, data: bytes) -> None:
                if any(data == d for d in stop):
                    raise _Killed("folder write")
                write_all(fd, data)

            patch.setattr(atomic, "write_all", write)
        with pytest.raises(_Killed):
            deploy.publish(reg, cand, LOCAL)


def _published_then_killed(uri: str, monkeypatch: pytest.MonkeyPatch, lost: set[str]) -> Registry:
    """Version 1 (1.0.0) serves; a publish of 1.1.0 was killed inside version 2's folder write.
    Returns a registry opened afresh, as the next process would."""
    reg = open_registry(uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    _killed_inside_folder_write(reg, monkeypatch, candidate(version="1.1.0", salt="b"), 2, lost)
    reg = open_registry(uri)
    assert reg.serving_version("iris") == 1
    return reg


LOST = [{"model.onnx"}, {"model.yaml"}, {"model.onnx", "model.yaml"}]
LOST_IDS = ["no-onnx", "no-yaml", "release-only"]


# --- readers in front of a folder a kill left with release.json alone ----------------------------


@pytest.mark.parametrize("lost", LOST, ids=LOST_IDS)
def test_a_kill_inside_the_folder_write_lists_no_version(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch, lost: set[str]
) -> None:
    """Neither the registry's model view nor the catalog lists version 2, whose bytes never
    landed (they did, when a version was "a folder with release.json")."""
    reg = _published_then_killed(registry_uri, monkeypatch, lost)
    assert reg.versions("iris") == [1]
    assert reg.version_folders("iris").numbers == [1]
    assert listing(reg)[0] == {"iris": [1]}  # the catalog's one listing of the registry


@pytest.mark.parametrize("lost", LOST, ids=LOST_IDS)
def test_serve_neither_lists_nor_serves_a_version_a_kill_left_incomplete(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch, lost: set[str]
) -> None:
    """`mlops-ci serve` neither lists version 2 nor answers for it by path: 404, as on a
    folder. (It listed it, answered 503 without model.onnx, and *served* it without
    model.yaml: a version never recorded and not whole.)"""
    from mlops_ci.serve.metrics import Metrics
    from mlops_ci.serve.models import ModelStore
    from mlops_ci.serve.protocol import ProtocolError

    reg = _published_then_killed(registry_uri, monkeypatch, lost)
    store = ModelStore(reg, Metrics())
    try:
        store.refresh(full=True)
        assert store.get("iris").version == 1
        try:
            store.load("iris", "2").result(timeout=30)
            by_path: object = "served"
        except ProtocolError as exc:
            by_path = exc.status
        assert (by_path, store.versions("iris")) == (404, (1,))
    finally:
        store.stop()


def test_rollback_names_only_whole_versions(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback to a version that is not there names the versions there are, without
    version 2; a rollback to 2 says there is no version 2 (it failed on a digest error)."""
    reg = _published_then_killed(registry_uri, monkeypatch, {"model.onnx"})
    with pytest.raises(MlopsCiError, match=r"has no version 9 .*\(versions: 1\)"):
        deploy.rollback(reg, "iris", 9, "bad", LOCAL)
    with pytest.raises(MlopsCiError, match=r"has no version 2 "):
        deploy.rollback(reg, "iris", 2, "bad", LOCAL)


def test_a_version_being_written_is_never_listed_before_its_bytes(registry_uri: str) -> None:
    """No kill needed: while a publish writes version 2, another process (the catalog, serve's
    poller, a rollback) lists the model, and every version it lists must be whole. release.json
    is small and lands long before a model.onnx of any size (here model.onnx's write is held
    until release.json has landed)."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    reader = open_registry(registry_uri)
    seen: list[tuple[list[int], list[str]]] = []
    put_if_absent = reg.store.put_if_absent

    def create(key: str, data: bytes) -> bool:
        if key == "iris/2/model.onnx":  # S3 only: a folder's files are staged, then renamed
            deadline = time.monotonic() + 1.0
            while reader.read_bytes("iris/2/release.json") is None:
                if time.monotonic() > deadline:
                    break  # release.json goes after model.onnx: nothing to see
                time.sleep(0.01)
            listed = reader.versions("iris")
            broken = []
            for n in listed:
                try:
                    reader.model_onnx("iris", n)
                except RegistryError as exc:
                    broken.append(str(exc))
            seen.append((listed, broken))
        return put_if_absent(key, data)

    reg.store.put_if_absent = create  # type: ignore[method-assign]
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    if isinstance(reg.store, registry.S3Store):
        assert len(seen) == 1
    for listed, broken in seen:
        assert broken == [], f"listed {listed} while a version was not whole: {broken}"
    assert reader.versions("iris") == [1, 2]


def test_a_semver_a_killed_deploy_never_published_takes_new_bytes(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill inside version 2's folder write publishes nothing, on a folder as on S3, so 1.1.0
    can then be published with other bytes (a fixed artifact). The leftover release.json made S3
    refuse it ("1.1.0 is already published (registry version 2)", exit 1)."""
    reg = _published_then_killed(registry_uri, monkeypatch, {"model.onnx"})
    fixed = candidate(version="1.1.0", salt="fixed")
    done = deploy.publish(reg, fixed, LOCAL)
    assert done.changed and reg.serving_version("iris") == done.registry_version
    assert reg.release("iris", done.registry_version)["artifact"]["sha256"] == (
        fixed.artifact_sha256
    )
    assert audit.verify(reg).ok


# --- what the next run does with such a folder (these pass: regression tests) --------------------


@pytest.mark.parametrize("lost", LOST, ids=LOST_IDS)
@pytest.mark.parametrize("then", ["same-semver", "other-semver", "rollback-to-it"])
def test_the_run_after_a_kill_inside_the_folder_write_converges(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch, lost: set[str], then: str
) -> None:
    """The chain verifies right after the kill; the next run (the same semver again, another
    semver, or a rollback to the leftover number) never serves version 2, and leaves one record
    per change and a verifying chain."""
    reg = _published_then_killed(registry_uri, monkeypatch, lost)
    verified = audit.verify(reg)
    assert verified.ok, verified.problem
    records = len(audit.records(reg))
    if then == "rollback-to-it":
        with pytest.raises(MlopsCiError):
            deploy.rollback(reg, "iris", 2, "bad", LOCAL)
        assert reg.serving_version("iris") == 1 and len(audit.records(reg)) == records
    else:
        version = "1.1.0" if then == "same-semver" else "1.2.0"
        cand = candidate(version=version, salt="b" if then == "same-semver" else "c")
        done = deploy.publish(reg, cand, LOCAL)
        assert done.changed
        assert reg.serving_version("iris") == done.registry_version
        assert reg.model_onnx("iris", done.registry_version) == cand.onnx
        assert reg.manifest_text("iris", done.registry_version).encode() == cand.manifest_text
        # on S3 version 2 is retired and the candidate is 3; on a folder 2 never existed
        assert reg.versions("iris") == [1, done.registry_version]
        assert len(audit.records(reg)) == records + 1
        assert deploy.publish(reg, cand, LOCAL).changed is False
        # and a later publish never reuses a number
        later = deploy.publish(reg, candidate(version="1.3.0", salt="d"), LOCAL)
        assert later.registry_version == done.registry_version + 1
    verified = audit.verify(reg)
    assert verified.ok, verified.problem


# --- the head read while the lock is taken (passes: regression) ----------------------------------


@pytest.mark.parametrize("behind", [1, 2, 3])
def test_a_stale_early_head_across_a_segment_boundary_is_read_again(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch, behind: int
) -> None:
    """With 3-line segments the early head names a record in a full segment, or `behind`
    records before the log's end across a boundary: the hint must not pick a segment that is
    not the log's last, and the head is read again, so the chain verifies."""
    monkeypatch.setattr(registry, "SEGMENT_LINES", 3)
    reg = open_registry(registry_uri)
    heads = []
    for i in range(4):  # records 1..4: segment 0 holds 1-3 (full), segment 1 holds 4
        deploy.publish(reg, candidate(version=f"1.{i}.0", salt=str(i)), LOCAL)
        heads.append(reg.read_bytes(audit.HEAD_KEY))
    stale = heads[3 - behind]
    lock = reg.store.lock
    monkeypatch.setattr(
        reg.store, "lock", lambda timeout_s, meanwhile=None: lock(timeout_s, lambda: stale)
    )
    done = deploy.publish(reg, candidate(version="2.0.0", salt="x"), LOCAL)
    assert reg.serving_version("iris") == done.registry_version == 5
    assert [r["seq"] for r in audit.records(reg)] == [1, 2, 3, 4, 5]
    verified = audit.verify(open_registry(registry_uri))
    assert verified.ok, verified.problem


# --- the release marker written with the lock's release (passes: regression) ---------------------


def test_a_marker_that_lands_after_the_next_holder_listed_changes_nothing(
    registry_uri: str,
) -> None:
    """On S3 the marker goes out with the unlock: the next holder may list the model before it
    lands. Hold version 2's marker back until a rollback to 1 and a publish of 1.2.0 (which
    then finds version 2 unmarked and not serving) are done: version 2 is kept as recorded,
    every version gets its marker once, the chain verifies."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    other = open_registry(registry_uri)
    locked = threading.Event()  # the first publish holds the lock
    done_by_other = threading.Event()
    errors: list[BaseException] = []
    put_if_absent = reg.store.put_if_absent

    def late_marker(key: str, data: bytes) -> bool:
        if key == "iris/.release-2-1.1.0" and reg.store.concurrent:  # S3: after the unlock
            assert done_by_other.wait(60), "the next holder never got the lock"
        return put_if_absent(key, data)

    def next_holders() -> None:
        try:
            assert locked.wait(60)
            deploy.rollback(other, "iris", 1, "bad", LOCAL, lock_timeout_s=60)
            deploy.publish(other, candidate(version="1.2.0", salt="c"), LOCAL, lock_timeout_s=60)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done_by_other.set()

    put_folder = reg.store.put_folder

    def writing(prefix: str, files: dict[str, bytes]) -> None:
        locked.set()
        put_folder(prefix, files)

    reg.store.put_if_absent = late_marker  # type: ignore[method-assign]
    reg.store.put_folder = writing  # type: ignore[method-assign]
    thread = threading.Thread(target=next_holders)
    thread.start()
    try:
        deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL, lock_timeout_s=60)
    finally:
        thread.join()
    assert errors == []
    reg = open_registry(registry_uri)
    assert reg.versions("iris") == [1, 2, 3] and reg.serving_version("iris") == 3
    assert reg.version_folders("iris").marked == {1, 2, 3}
    verified = audit.verify(reg)
    assert verified.ok, verified.problem


def test_a_marker_that_fails_does_not_fail_the_publish_it_follows(registry_uri: str) -> None:
    """The marker is a write "the next holder does without" (`registry.Held`): an error writing
    it, once version 2 is recorded and serves, does not fail the publish. (It raised: the CLI
    exited 2 and `deploy_push` recorded the model as not deployed, though it served.)"""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    put_if_absent = reg.store.put_if_absent

    def failing(key: str, data: bytes) -> bool:
        if "/.release-" in key:
            raise RegistryError(f"cannot write {key}: SlowDown")
        return put_if_absent(key, data)

    reg.store.put_if_absent = failing  # type: ignore[method-assign]
    done = deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    assert done.changed and reg.serving_version("iris") == 2
    # No marker, and it serves: listed without asking the log (what config.pbtxt names serves).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audit, "recorded_among", None)
        assert reg.versions("iris") == [1, 2]
    deploy.rollback(reg, "iris", 1, "bad", LOCAL)
    assert reg.versions("iris") == [1, 2]  # no marker, not serving: listed as the log records it
    assert deploy.rollback(reg, "iris", 2, "good after all", LOCAL).changed  # recorded, too
    reg.store.put_if_absent = put_if_absent  # type: ignore[method-assign]
    assert deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL).changed is False
    assert reg.version_folders("iris").marked == {1, 2}


# --- the InferenceService's ETag (passes: regression) --------------------------------------------


def _boto3_client(store: registry.S3Store):
    """boto3, for what the registry never does itself (a multipart upload)."""
    import boto3
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=store.endpoint, region_name=store.region, config=config)


def test_an_inference_service_whose_etag_is_no_md5_is_written_again(registry_uri: str) -> None:
    """A listing's ETag answers whether inferenceservice.yaml changed. One that is no MD5
    (a multipart upload, SSE-KMS) never matches: the same bytes are written again, and bytes
    changed by hand are always put right."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    key = "iris/inferenceservice.yaml"
    right = reg.read_bytes(key)
    assert right is not None
    edited = right + b"# edited by hand\n"
    for i, data in enumerate((edited, right)):
        if isinstance(reg.store, registry.S3Store):
            store = reg.store
            full = store._key(key)
            client = _boto3_client(store)
            up = client.create_multipart_upload(Bucket=store.bucket, Key=full)
            part = client.upload_part(
                Bucket=store.bucket, Key=full, UploadId=up["UploadId"], PartNumber=1, Body=data
            )
            client.complete_multipart_upload(
                Bucket=store.bucket,
                Key=full,
                UploadId=up["UploadId"],
                MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
            )
            assert "-" in reg.store.folder("iris")[1]["inferenceservice.yaml"]  # no MD5
        else:
            reg.write_bytes(key, data)
        deploy.publish(reg, candidate(version=f"1.{i + 1}.0", salt=str(i)), LOCAL)
        assert reg.read_bytes(key) == right
        assert yaml.safe_load(right)["kind"] == "InferenceService"


# --- registry.together (passes: regression) ------------------------------------------------------


class _Stop(BaseException):
    pass


def test_together_raises_the_first_failure_in_argument_order_once_all_have_ended() -> None:
    ended: list[str] = []

    def call(name: str, delay: float = 0.0, fail: BaseException | None = None):
        def run() -> str:
            time.sleep(delay)
            ended.append(name)
            if fail is not None:
                raise fail
            return name

        return run

    assert together([call("a", 0.05), call("b"), call("c")]) == ["a", "b", "c"]
    # A BaseException from a middle call (a thread) while the last (this thread) succeeds.
    ended.clear()
    with pytest.raises(_Stop):
        together([call("a", 0.1), call("b", 0.02, _Stop()), call("c")])
    assert sorted(ended) == ["a", "b", "c"]
    # Several fail: the first in argument order wins, whichever ends first.
    ended.clear()
    with pytest.raises(ValueError, match="first"):
        together([call("a", 0.1, ValueError("first")), call("b", 0, _Stop()), call("c")])
    assert sorted(ended) == ["a", "b", "c"]
    # The last (this thread) fails too: an earlier failure still comes first.
    ended.clear()
    with pytest.raises(_Stop):
        together([call("a", 0.1, _Stop()), call("b", 0.0, KeyError("last"))])
    assert sorted(ended) == ["a", "b"]
    # Only the last fails: after the others ended.
    ended.clear()
    with pytest.raises(KeyError):
        together([call("a", 0.1), call("b", 0.0, KeyError("last"))])
    assert sorted(ended) == ["a", "b"]
    # Started in argument order, the last in this thread.
    started: list[tuple[str, bool]] = []
    main = threading.get_ident()

    def where(name: str):
        return lambda: started.append((name, threading.get_ident() == main))

    together([where("x"), where("y"), where("z")], threads=1)
    assert ("z", True) in started
    assert [s for s in started if s[0] != "z"] == [("x", False), ("y", False)]


# --- concurrency (passes: regression) ------------------------------------------------------------


def test_eight_deploys_of_one_semver_and_of_others_at_once(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four deploys of the same 1.1.0 race four of other semvers of the same model (early
    heads, markers after the unlock, 3-line segments): one version per semver, one record
    each, every version marked, the chain verifies."""
    monkeypatch.setattr(registry, "SEGMENT_LINES", 3)
    deploy.publish(open_registry(registry_uri), candidate(version="1.0.0"), LOCAL)
    jobs = [("1.1.0", "same")] * 4 + [(f"2.{i}.0", f"o{i}") for i in range(4)]
    cands = [candidate(version=version, salt=salt) for version, salt in jobs]
    changed = [done.changed for done in publish_at_once(registry_uri, cands, LOCAL)]
    assert changed.count(True) == 5
    reg = open_registry(registry_uri)
    assert reg.versions("iris") == [1, 2, 3, 4, 5, 6]
    semvers = sorted(reg.release("iris", n)["version"] for n in reg.versions("iris"))
    assert semvers == ["1.0.0", "1.1.0", "2.0.0", "2.1.0", "2.2.0", "2.3.0"]
    assert reg.version_folders("iris").marked == {1, 2, 3, 4, 5, 6}
    assert len(audit.records(reg)) == 6
    verified = audit.verify(reg)
    assert verified.ok, verified.problem


# --- a real kill -9 during a big model's upload ---------------------------------------------------


def _publish_in_child(uri: str, cand: Candidate) -> None:
    deploy.publish(open_registry(uri), cand, LOCAL)  # its own S3 connections, not the parent's
    os._exit(0)


@pytest.mark.slow
def test_a_kill_9_during_a_big_upload_leaves_no_listed_version_without_its_bytes(
    s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real kill -9, with no hook in the deploy. A 24 MB model.onnx: the moment release.json
    of version 2 can be read, the deploy is killed (release.json lands within milliseconds,
    model.onnx never does). Every version the registry then lists must be whole."""
    import dataclasses
    import hashlib
    import multiprocessing
    import signal

    uri = s3_server.fresh_uri()
    reg = open_registry(uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    big = candidate(version="1.1.0", salt="b").onnx + os.urandom(24 << 20)
    cand = dataclasses.replace(
        candidate(version="1.1.0", salt="b"),
        onnx=big,
        onnx_info={"sha256": hashlib.sha256(big).hexdigest(), "opset": 17},
    )
    child = multiprocessing.get_context("fork").Process(target=_publish_in_child, args=(uri, cand))
    child.start()
    try:
        deadline = time.monotonic() + 60
        while reg.read_bytes("iris/2/release.json") is None and child.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    finally:
        child.join()
    time.sleep(0.5)  # let a request the server had whole land
    reg = open_registry(uri)
    assert reg.serving_version("iris") in (1, 2)
    for n in reg.versions("iris"):
        reg.model_onnx("iris", n)  # RegistryError: listed, not whole
