"""Publishing, converging, rollback, the smoke test, config.pbtxt and the InferenceService."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import random
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from deploy_models import LOCAL, candidate, git, publish_at_once, tree, write_build, write_model
from ghserver import fake_sha

from mlops_ci import audit, deploy, triton
from mlops_ci.deploy import Provenance
from mlops_ci.errors import CheckFailed, UsageError
from mlops_ci.manifest import load
from mlops_ci.registry import Registry, RegistryError, open_registry

# CI has ../shared beside the checkout (see its fixtures/README.md).
STRICT_ISVC = (
    Path(__file__).resolve().parents[2]
    / "shared/fixtures/kserve/inferenceservice.v1beta1.strict.json"
)


def test_publish_writes_a_complete_version_then_names_it(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    result = deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    assert (result.registry_version, result.changed) == (1, True)
    assert reg.serving_version("iris") == 1
    release = reg.release("iris", 1)
    assert release["version"] == "1.0.0"
    assert release["source"] == "local"
    assert release["onnx"]["sha256"] == candidate().onnx_sha256
    assert reg.model_onnx("iris", 1) == candidate().onnx
    assert "version: 1.0.0" in reg.manifest_text("iris", 1)
    [record] = audit.records(reg)
    assert record["action"] == "deploy" and record["registry_version"] == 1
    assert release["audit"]["sha256"] == audit.digest(audit.encode(record))
    assert audit.verify(reg).ok

    second = deploy.publish(reg, candidate(version="1.1.0", salt="retrained"), LOCAL)
    assert (second.registry_version, second.previous) == (2, 1)
    assert reg.serving_version("iris") == 2
    assert reg.versions("iris") == [1, 2]


def test_the_inference_service_is_written_when_it_changes_and_only_then(registry_uri) -> None:
    """The listing of the model's folder says (on S3 by its ETag, with no read) whether the
    InferenceService is the one a publish would write; a rollback writes back its version's."""
    reg = open_registry(registry_uri)
    key = "iris/inferenceservice.yaml"
    writes: list[str] = []
    put = reg.store.put
    reg.store.put = lambda k, data: (writes.append(k), put(k, data))[1]  # type: ignore[method-assign]

    def replicas() -> int:
        return yaml.safe_load(reg.read_bytes(key))["spec"]["predictor"]["minReplicas"]

    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    assert writes.count(key) == 1
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    assert writes.count(key) == 1  # the same InferenceService: not written again
    scaled = candidate(version="1.2.0", salt="c")
    scaled.manifest_data["spec"]["serving"] = {"min_replicas": 2, "max_replicas": 3}
    deploy.publish(reg, scaled, LOCAL)
    assert writes.count(key) == 2 and replicas() == 2
    deploy.rollback(reg, "iris", 2, "bad", LOCAL)
    assert writes.count(key) == 3 and replicas() != 2


def test_the_head_read_while_the_lock_is_taken_is_only_a_hint(registry_uri: str) -> None:
    """A publish reads the audit head while it takes the lock (a round trip less on S3), so it
    may read it before the last holder moved it: such a head is read again, never trusted."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    stale = reg.read_bytes(audit.HEAD_KEY)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    deploy.publish(reg, candidate(version="1.2.0", salt="c"), LOCAL)
    assert audit.read_end(reg, stale).head == reg.read_bytes(audit.HEAD_KEY)
    lock = reg.store.lock

    def lock_reading(head: bytes | None):
        return lambda timeout_s, meanwhile=None: lock(timeout_s, lambda: head)

    for early in (stale, None):  # two records behind; read before the log had a head
        reg.store.lock = lock_reading(early)  # type: ignore[method-assign]
        done = deploy.publish(
            reg, candidate(version=f"2.0.{int(early is None)}", salt=str(early)), LOCAL
        )
        assert reg.serving_version("iris") == done.registry_version
    assert audit.verify(reg).ok


def test_the_same_commit_again_changes_nothing(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    keys = {k: reg.read_bytes(k) for k in reg.list_keys("")}
    again = deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    assert (again.registry_version, again.changed) == (1, False)
    assert {k: reg.read_bytes(k) for k in reg.list_keys("")} == keys
    assert len(audit.records(reg)) == 1


def test_the_same_semver_with_other_bytes_is_refused(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    with pytest.raises(CheckFailed, match=r"higher metadata\.version"):
        deploy.publish(reg, candidate(version="1.0.0", salt="other bytes"), LOCAL)
    assert reg.versions("iris") == [1]
    assert len(audit.records(reg)) == 1


def test_a_publish_reads_no_other_versions_release(registry_uri: str) -> None:
    """Each version's release marker names its semver, so finding out whether a semver is
    published costs one listing of the model's folder, not a read per version (a round trip
    each on S3)."""
    reg = open_registry(registry_uri)
    for i in range(4):
        deploy.publish(reg, candidate(version=f"1.{i}.0", salt=str(i)), LOCAL)
    assert "iris/.release-3-1.2.0" in reg.list_keys("iris")
    read: list[str] = []
    get = reg.store.get  # every read of an object, get_many's too, comes through it
    reg.store.get = lambda key: read.append(key) or get(key)  # type: ignore[method-assign]
    deploy.publish(reg, candidate(version="1.4.0", salt="4"), LOCAL)
    assert [k for k in read if k.endswith("release.json")] == []
    # A semver already there is found, and its release alone is read.
    read.clear()
    again = deploy.publish(reg, candidate(version="1.2.0", salt="2"), LOCAL)
    assert (again.registry_version, again.changed) == (3, False)
    assert [k for k in read if k.endswith("release.json")] == ["iris/3/release.json"]


def test_a_semver_with_pre_release_and_build_metadata_survives_its_marker(registry_uri) -> None:
    """'+' is a space in a URL's query, and '-' splits the marker's name: both stay intact."""
    reg = open_registry(registry_uri)
    for version in ("1.0.0+build.5", "1.0.1-rc.1+b-2"):
        deploy.publish(reg, candidate(version=version, salt=version), LOCAL)
    found = reg.version_folders("iris")
    assert (found.semvers, found.marked) == ({1: "1.0.0+build.5", 2: "1.0.1-rc.1+b-2"}, {1, 2})
    again = deploy.publish(reg, candidate(version="1.0.0+build.5", salt="1.0.0+build.5"), LOCAL)
    assert (again.registry_version, again.changed) == (1, False)


def test_a_version_folder_without_a_marker_is_asked_its_release(registry_uri: str) -> None:
    """A folder written by hand, or by an older mlops-ci, has no marker: its release.json still
    decides whether the semver is published."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    reg.store.delete("iris/.release-1-1.0.0")
    with pytest.raises(CheckFailed, match=r"higher metadata\.version"):
        deploy.publish(reg, candidate(version="1.0.0", salt="other bytes"), LOCAL)
    again = deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    assert (again.registry_version, again.changed) == (1, False)
    assert reg.versions("iris") == [1]
    assert "iris/.release-1-1.0.0" in reg.list_keys("iris")  # and now it has its marker


def test_after_a_rollback_a_publish_reads_no_whole_log(registry_uri: str) -> None:
    """After a rollback the newest version does not serve; its marker says it is recorded, so
    the publish that follows does not read the whole audit log to find out."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    deploy.rollback(reg, "iris", 1, "bad", LOCAL)
    read_log = reg.store.read_log
    reads: list[str] = []
    reg.store.read_log = lambda key: reads.append(key) or read_log(key)  # type: ignore[method-assign]
    assert deploy.publish(reg, candidate(version="1.2.0", salt="c"), LOCAL).registry_version == 3
    assert reads == []
    assert reg.versions("iris") == [1, 2, 3]


def test_a_rollback_lists_no_versions(registry_uri: str) -> None:
    """A rollback reads the release.json of the version it is asked for; only a version that
    is not there makes it list the others, to name them."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    listed: list[str] = []
    folder = reg.store.folder
    reg.store.folder = lambda prefix: listed.append(prefix) or folder(prefix)  # type: ignore[method-assign]
    assert deploy.rollback(reg, "iris", 1, "bad", LOCAL).registry_version == 1
    assert listed == []
    with pytest.raises(UsageError, match=r"has no version 3 .*\(versions: 1, 2\)"):
        deploy.rollback(reg, "iris", 3, "bad", LOCAL)
    assert listed == ["iris"]


def test_a_semver_too_long_to_name_its_marker_is_refused_before_a_write(registry_uri) -> None:
    """A semver is valid at any length, but it names the release marker: one of 250
    characters made the marker's write fail after the version was serving."""
    reg = open_registry(registry_uri)
    version = "2.0.0-" + "a" * 250
    with pytest.raises(CheckFailed, match="longer than 128 characters"):
        deploy.publish(reg, dataclasses.replace(candidate(), version=version), LOCAL)
    assert reg.list_keys("") == []


def test_a_recorded_version_left_without_its_marker_gets_it_from_the_next_publish(
    registry_uri: str,
) -> None:
    """A kill between version 2's record and its marker, then a rollback: the next publish of
    another semver finds version 2 recorded, keeps it, and marks it."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    reg.store.delete("iris/.release-2-1.1.0")
    deploy.rollback(reg, "iris", 1, "bad", LOCAL)
    assert deploy.publish(reg, candidate(version="1.2.0", salt="c"), LOCAL).registry_version == 3
    assert reg.versions("iris") == [1, 2, 3]
    assert "iris/.release-2-1.1.0" in reg.list_keys("iris")


@pytest.mark.parametrize("missing", ["model.onnx", "model.yaml"])
def test_a_folder_a_kill_left_without_all_its_objects_is_published_anew(
    registry_uri: str, missing: str
) -> None:
    """On S3 a version folder's objects are written together, so a kill can leave release.json
    without model.onnx or model.yaml. The re-run does not record that folder (version 2 would
    serve without its bytes): it retires it and publishes the candidate as version 3."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    new = candidate(version="1.1.0", salt="b")

    def killed(*args: object) -> None:
        raise _Killed("append")

    reg.store.append = killed  # the kill comes before the record
    with pytest.raises(_Killed):
        deploy.publish(reg, new, LOCAL)
    reg = open_registry(registry_uri)
    assert reg.version_folders("iris").numbers == [1, 2] and reg.serving_version("iris") == 1
    assert reg.versions("iris") == [1]  # whole, and never recorded: no version to readers
    reg.store.delete(f"iris/2/{missing}")
    again = deploy.publish(reg, new, LOCAL)
    assert (again.registry_version, again.changed) == (3, True)
    assert reg.versions("iris") == [1, 3] and reg.serving_version("iris") == 3
    assert reg.model_onnx("iris", 3) == new.onnx
    assert reg.manifest_text("iris", 3).encode() == new.manifest_text
    assert audit.verify(reg).ok
    assert deploy.publish(reg, new, LOCAL).changed is False


@pytest.mark.parametrize("version", ["1.0.0/../../escape", "1.0.0\n", "latest"])
def test_a_version_that_is_no_semver_is_refused_before_a_write(tmp_path: Path, version) -> None:
    """The semver names a file (the marker): a candidate that skipped the manifest's check
    must not write outside its folder."""
    reg = open_registry(tmp_path / "registry")
    with pytest.raises(CheckFailed, match="not a semantic version"):
        deploy.publish(reg, dataclasses.replace(candidate(), version=version), LOCAL)
    assert not (tmp_path / "registry").exists() or reg.list_keys("") == []
    assert not (tmp_path / "escape").exists()


def test_rollback_switches_the_version_and_a_redeploy_leaves_it_standing(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    done = deploy.rollback(reg, "iris", 1, "accuracy dropped", Provenance(actor="oncall"))
    assert (done.registry_version, done.previous) == (1, 2)
    assert reg.serving_version("iris") == 1
    record = audit.records(reg)[-1]
    assert (record["action"], record["actor"], record["reason"]) == (
        "rollback",
        "oncall",
        "accuracy dropped",
    )
    # The same commit deployed again does not undo the rollback.
    assert deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL).changed is False
    assert reg.serving_version("iris") == 1
    # A new semver does.
    assert deploy.publish(reg, candidate(version="1.2.0", salt="c"), LOCAL).registry_version == 3
    assert reg.serving_version("iris") == 3
    assert audit.verify(reg).ok


def test_a_rollback_to_the_serving_version_writes_nothing(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "registry")
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    log = reg.read_bytes(audit.LOG_KEY)
    done = deploy.rollback(reg, "iris", 2, "just in case", Provenance(actor="oncall"))
    assert (done.changed, done.audit_sha256) == (False, None)
    assert "already serves version 2" in done.message
    assert reg.read_bytes(audit.LOG_KEY) == log
    # When config.pbtxt says 2 but the log's last word for the model is 1 (a rollback killed
    # before its config write), the same command records and converges.
    deploy.rollback(reg, "iris", 1, "bad", Provenance(actor="oncall"))
    reg.write_bytes(
        "iris/config.pbtxt", deploy.serving_files(reg, "iris", 2, _manifest(reg, 2))["config.pbtxt"]
    )
    assert reg.serving_version("iris") == 2
    again = deploy.rollback(reg, "iris", 2, "forward again", Provenance(actor="oncall"))
    assert again.changed and audit.records(reg)[-1]["registry_version"] == 2
    assert audit.verify(reg).ok


def _manifest(reg, n: int) -> dict:
    import yaml

    return yaml.safe_load(reg.manifest_text("iris", n))


def test_rollback_refuses_a_missing_or_tampered_version(registry_uri: str) -> None:
    """On every backend: on S3 the digest check runs in a thread among the rollback's other
    reads (`Registry.gather`), and its error must still stop the rollback."""
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    with pytest.raises(UsageError, match="no version 7"):
        deploy.rollback(reg, "iris", 7, "why", LOCAL)
    reg.write_bytes("iris/1/model.onnx", candidate().onnx + b"\x00")
    with pytest.raises(RegistryError, match="does not match"):
        deploy.rollback(reg, "iris", 1, "why", LOCAL)
    assert reg.serving_version("iris") == 2
    assert len(audit.records(reg)) == 2


def test_a_config_pbtxt_triton_cannot_parse_stops_a_publish(registry_uri: str) -> None:
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    reg.write_bytes("iris/config.pbtxt", b"not { a config")
    with pytest.raises(RegistryError, match=r"config\.pbtxt"):
        deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    assert reg.versions("iris") == [1] and len(audit.records(reg)) == 1


def test_config_pbtxt_is_one_triton_parses_and_matches_the_signature(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "r")
    deploy.publish(reg, candidate(), LOCAL)
    cfg = triton.parse((tmp_path / "r/iris/config.pbtxt").read_text())
    pb = triton.model_config_pb2()
    assert cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 32
    assert list(cfg.version_policy.specific.versions) == [1]
    [inp] = cfg.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", pb.TYPE_FP32, [4])
    label, proba = cfg.output
    # A batch-only output ([-1]) is dims [1] reshaped to a scalar, as Triton needs to load it.
    assert (label.data_type, list(label.dims), label.HasField("reshape")) == (
        pb.TYPE_INT64,
        [1],
        True,
    )
    assert list(label.reshape.shape) == []
    assert (list(proba.dims), proba.HasField("reshape")) == ([3], False)


def test_config_semantics_are_checked_beyond_the_parser() -> None:
    T = triton.Tensor
    # Batching a signature without a leading -1 parses fine but Triton refuses to load it.
    with pytest.raises(CheckFailed, match="batch dimension"):
        triton.build(
            "m", [T("x", "float32", (4,))], [T("y", "float32", (1,))], 1, {"max_batch_size": 8}
        )
    cfg = triton.build("m", [T("x", "float32", (-1, 4))], [T("y", "float32", (-1, 1))], 1)
    cfg.platform = "tensorrt_plan"
    cfg.input[0].dims[0] = 5
    with pytest.raises(CheckFailed, match=r"platform is 'tensorrt_plan'.*dims \[5\] disagree"):
        triton.check(cfg, [T("x", "float32", (-1, 4))], [T("y", "float32", (-1, 1))])
    with pytest.raises(ValueError, match="not a Triton model configuration"):
        triton.parse('name: "m"\nplatfrom: "onnxruntime_onnx"\n')


def test_inference_service_passes_kserve_strict_schema(tmp_path: Path) -> None:
    import jsonschema
    import yaml

    assert STRICT_ISVC.is_file(), f"{STRICT_ISVC} is missing: CI puts ../shared beside the checkout"
    reg = open_registry(tmp_path / "r")
    deploy.publish(reg, candidate(), LOCAL)
    doc = yaml.safe_load((tmp_path / "r/iris/inferenceservice.yaml").read_text())
    # Validate without re-checking the 1 MB schema against its metaschema (that takes ~40 s).
    validator = jsonschema.Draft7Validator(json.loads(STRICT_ISVC.read_text()))
    validator.validate(doc)
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "onnx"
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"] == reg.uri_of("iris")
    # The schema is strict: the same document with a typo fails, so the check above means something.
    model["storageURI"] = model.pop("storageUri")
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        validator.validate(doc)


def test_webhook_only_checks_are_made_by_the_generator() -> None:
    from mlops_ci import kserve

    with pytest.raises(CheckFailed, match="DNS label"):
        kserve.render("Iris_Model", "s3://b/iris")
    with pytest.raises(CheckFailed, match="exceeds max_replicas"):
        kserve.render("iris", "s3://b/iris", {"min_replicas": 3, "max_replicas": 1})


@pytest.mark.parametrize(
    ("serving", "problem"),
    [
        ({"max_batch_size": 2**31}, "max_batch_size 2147483648 is more than Triton's"),
        ({"instances": 2**31}, "instances 2147483648 is more than Triton's"),
        ({"max_replicas": 2**31}, "max_replicas 2147483648 is more than KServe's"),
    ],
)
def test_serving_numbers_past_their_field_s_range_are_refused_before_a_write(
    tmp_path: Path, serving: dict[str, int], problem: str
) -> None:
    """The schema bounds these below only. Past int32, protobuf raised ValueError (an internal
    error, exit 2) for Triton's fields, and an InferenceService was written whose maxReplicas
    KServe's CRD (`format: int32`) refuses in the cluster."""
    predictor = json.loads(STRICT_ISVC.read_text())["properties"]["spec"]["properties"]
    assert predictor["predictor"]["properties"]["maxReplicas"]["format"] == "int32"
    reg = open_registry(tmp_path / "r")
    cand = candidate()
    cand.manifest_data["spec"]["serving"] = serving
    with pytest.raises(CheckFailed, match=problem):
        deploy.publish(reg, cand, LOCAL)
    assert reg.list_keys() == [".mlops/lock"]  # nothing written (the lock's file stays)


def test_smoke_test_runs_the_cases_on_what_the_registry_serves(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "r")
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    ok = deploy.smoke_test(reg, "iris")
    assert ok.passed, ok.failures
    assert ok.summary == "2/2 test cases passed on version 1"
    deploy.publish(reg, candidate(version="1.1.0", salt="x", wrong_label=True), LOCAL)
    bad = deploy.smoke_test(reg, "iris")
    assert not bad.passed
    assert len(bad.failures) == 2


def test_load_candidate_checks_the_onnx_against_convert_json(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    manifest = load(write_model(repo), repo)
    build = write_build(tmp_path / "build", manifest.path)
    cand = deploy.load_candidate(manifest, build)
    assert cand.onnx_sha256 == json.loads((build / "convert.json").read_text())["onnx"]["sha256"]
    assert cand.artifact_path == "models/iris/model.skops"
    (build / "model.onnx").write_bytes(cand.onnx + b"\x00")
    with pytest.raises(CheckFailed, match="changed after conversion"):
        deploy.load_candidate(manifest, build)
    (build / "model.onnx").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckFailed, match="not an ONNX model"):
        deploy.load_candidate(manifest, build)
    (build / "convert.json").unlink()  # a build the pipeline never wrote: exit 2, not a verdict
    with pytest.raises(UsageError, match="both needed"):
        deploy.load_candidate(manifest, build)


def test_eight_concurrent_deploys_are_serialised(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Different models and the same model, eight at once: unique versions, no lost record (on
    S3 with 3-line audit segments, so the deploys also race where a segment fills up)."""
    from mlops_ci import registry

    monkeypatch.setattr(registry, "SEGMENT_LINES", 3)
    jobs = [("iris", f"1.{i}.0", f"s{i}") for i in range(4)] + [
        (f"m{i}", "1.0.0", "") for i in range(4)
    ]
    publish_at_once(registry_uri, [candidate(n, v, salt=s) for n, v, s in jobs], LOCAL)
    reg = open_registry(registry_uri)
    assert reg.versions("iris") == [1, 2, 3, 4]
    assert sorted(reg.release("iris", n)["version"] for n in (1, 2, 3, 4)) == [
        f"1.{i}.0" for i in range(4)
    ]
    records = audit.records(reg)
    assert len(records) == 8
    assert sorted((r["model"], r["registry_version"]) for r in records) == sorted(
        [("iris", n) for n in (1, 2, 3, 4)] + [(f"m{i}", 1) for i in range(4)]
    )
    assert audit.verify(reg).ok


# --- crash safety --------------------------------------------------------------------------------

KILLS = 50
MODELS = 5  # kills rotate over a few models, so each keeps the handful of versions real ones have


def _deploy_in_child(uri: str, name: str, version: str, salt: str) -> None:
    # open_registry gives the child its own S3 connections, not the parent's
    deploy.publish(open_registry(uri), candidate(name, version, salt=salt), LOCAL)
    os._exit(0)


@pytest.mark.slow
def test_a_kill_at_any_point_leaves_a_complete_version_serving(
    registry_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 a deploy at random points, 50 times: the old or the new version serves, complete;
    the chain verifies as it stands; the next run converges with exactly one record. On S3 the
    audit log's segments hold 3 lines here (the forked children inherit it), so kills also land
    while a segment fills up or the next one is created."""
    from mlops_ci import registry

    monkeypatch.setattr(registry, "SEGMENT_LINES", 3)
    reg = open_registry(registry_uri)
    candidate()  # train and convert once, before forking, so children only deploy
    ctx = multiprocessing.get_context("fork")  # a forked child starts in milliseconds
    started = time.perf_counter()
    child = ctx.Process(target=_deploy_in_child, args=(registry_uri, "m0", "1.0.0", "warm"))
    child.start()
    child.join()
    full = time.perf_counter() - started  # fork + a whole deploy
    assert child.exitcode == 0
    rng = random.Random(20261130)
    outcomes = {"old": 0, "new": 0}
    for i in range(KILLS):
        name, version, salt = f"m{i % MODELS}", f"2.0.{i}", f"kill{i}"
        before = reg.serving_version(name)
        child = ctx.Process(target=_deploy_in_child, args=(registry_uri, name, version, salt))
        child.start()
        time.sleep(rng.uniform(0, full * 1.1))
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join()
        serving = reg.serving_version(name)
        new = serving is not None and reg.release(name, serving)["version"] == version
        assert serving == before or new
        outcomes["new" if new else "old"] += 1
        if serving is not None:
            assert reg.model_onnx(name, serving) == candidate().onnx  # complete, digest verified
        # The chain and its head after every kill; the releases' records too every tenth time
        # (that reads every release.json, which is slow on moto).
        log, head = audit.read_log(reg) or b"", reg.read_bytes(audit.HEAD_KEY)
        verified = audit.verify(reg) if i % 10 == 9 else audit.verify_log(log, head)
        assert verified.ok, verified.problem
        if new:  # a version serves only once its record is in the log
            assert audit.is_recorded(log, reg.release(name, serving)["audit"]["sha256"])
        converged = deploy.publish(reg, candidate(name, version, salt=salt), LOCAL)
        assert reg.serving_version(name) == converged.registry_version
        assert reg.release(name, converged.registry_version)["version"] == version
    verified = audit.verify(reg)
    assert verified.ok, verified.problem
    deploys = sorted(
        (r["model"], r["version"]) for r in audit.records(reg) if r["action"] == "deploy"
    )
    assert deploys == sorted(
        {("m0", "1.0.0"), *((f"m{i % MODELS}", f"2.0.{i}") for i in range(KILLS))}
    )
    assert outcomes["old"] > 0 and outcomes["new"] > 0  # kills landed before and after the switch
    if registry_uri.startswith("s3://"):  # the log did grow by segments
        assert len([k for k in reg.list_keys(".mlops") if k.startswith(audit.LOG_KEY)]) > 10


class _Killed(BaseException):
    """Raised by a write, as a kill would stop the deploy there (no handler catches it)."""


_WRITES = ("put", "put_if_absent", "put_if_match", "append", "delete", "put_folder")


def _stopped_at_write(reg, k: int, action) -> bool:
    """Run `action()` with the registry's k-th write (0-based) raising _Killed: whether it hit.
    Random kills rarely land in a window of a few milliseconds; this tries every write."""
    store, count = reg.store, [0]
    saved = {name: getattr(store, name) for name in _WRITES}

    def stopping(name: str):
        def write(*args, **kwargs):
            count[0] += 1
            if count[0] == k + 1:
                raise _Killed(f"{name} {args[0]}")
            return saved[name](*args, **kwargs)

        return write

    for name in _WRITES:
        setattr(store, name, stopping(name))
    try:
        action()
    except _Killed:
        return True
    finally:
        for name in _WRITES:
            setattr(store, name, saved[name])
    return False


def _chain_verifies(uri: str) -> tuple[Registry, bytes]:
    reg = open_registry(uri)
    log, head = audit.read_log(reg) or b"", reg.read_bytes(audit.HEAD_KEY)
    verified = audit.verify_log(log, head)
    assert verified.ok, verified.problem
    return reg, log


@pytest.mark.parametrize("k", range(10))
def test_a_publish_stopped_at_each_of_its_writes_converges(registry_uri: str, k: int) -> None:
    """Stop a publish at its k-th write, each k in turn, on every backend: the chain verifies,
    the version that serves has its record in the log, and the next run converges."""
    deploy.publish(open_registry(registry_uri), candidate(version="1.0.0"), LOCAL)
    new = candidate(version="1.1.0", salt="b")
    reg = open_registry(registry_uri)
    hit = _stopped_at_write(reg, k, lambda: deploy.publish(reg, new, LOCAL))
    assert k < 9 or not hit, "the publish has more writes than the range covers"
    reg, log = _chain_verifies(registry_uri)
    serving = reg.serving_version("iris")
    assert audit.is_recorded(log, reg.release("iris", serving)["audit"]["sha256"])
    again = deploy.publish(reg, new, LOCAL)
    assert reg.serving_version("iris") == again.registry_version
    assert reg.release("iris", again.registry_version)["version"] == "1.1.0"
    assert audit.verify(reg).ok


@pytest.mark.parametrize("k", range(5))
def test_a_rollback_stopped_at_each_of_its_writes_converges(registry_uri: str, k: int) -> None:
    reg = open_registry(registry_uri)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    hit = _stopped_at_write(reg, k, lambda: deploy.rollback(reg, "iris", 1, "bad", LOCAL))
    assert k < 4 or not hit, "the rollback has more writes than the range covers"
    reg, log = _chain_verifies(registry_uri)
    serving = reg.serving_version("iris")
    assert serving in (1, 2)
    if serving == 1:  # never switched before its record
        assert deploy._intended(audit.model_records(log, "iris")) == 1
    deploy.rollback(reg, "iris", 1, "bad", LOCAL)
    assert reg.serving_version("iris") == 1
    assert audit.verify(reg).ok


def _lose_first_response(monkeypatch: pytest.MonkeyPatch, suffix: str) -> list[str]:
    """The first PUT to a key ending in `suffix` reaches the server, but its response is lost
    (a read timeout): the S3 client retries it. Returns the lost requests' URLs (the request
    targets its connection pool was given)."""
    import urllib3

    real, lost = urllib3.HTTPConnectionPool.urlopen, []

    def urlopen(self, method, url, *args, **kwargs):
        response = real(self, method, url, *args, **kwargs)
        if method == "PUT" and url.split("?")[0].endswith(suffix) and not lost:
            lost.append(url)
            raise urllib3.exceptions.ReadTimeoutError(None, url, "read timed out")
        return response

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", urlopen)
    return lost


@pytest.mark.parametrize("suffix", ["/iris/1/model.onnx", "/.mlops/audit.jsonl", "/.mlops/lock"])
def test_a_lost_s3_response_and_its_retry_neither_fail_nor_repeat_a_write(
    s3_server, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """A conditional write lands, its response is lost, the client retries and meets its own
    object: a version object is not "exists already", an audit line is not appended twice
    (the chain would break), and the lock is not "held by another deploy" (by itself)."""
    uri = s3_server.fresh_uri()
    reg = open_registry(uri)
    if suffix.endswith("audit.jsonl"):
        deploy.publish(reg, candidate(version="0.9.0", salt="a"), LOCAL)  # a log to append to
    with monkeypatch.context() as patched:
        lost = _lose_first_response(patched, suffix)
        done = deploy.publish(reg, candidate(version="1.0.0"), LOCAL, lock_timeout_s=5)
    assert lost and done.changed
    verified = audit.verify(open_registry(uri))
    assert verified.ok, verified.problem
    assert [r["version"] for r in audit.records(reg)][-1] == "1.0.0"


# --- re-verification against GitHub (tests/ghserver.py) -------------------------------------------

REPO = "acme/models"


def _merged_push(tmp_path: Path, method: str = "merge") -> tuple[Path, str, str]:
    """A checkout whose main went from iris 1.0.0 to 1.1.0 through a pull request merged by
    `method`; returns (checkout, before, after)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_model(repo, version="1.0.0")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "iris 1.0.0")
    before = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    write_model(repo, version="1.1.0", salt="retrained")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "retrain")
    (repo / "NOTES.md").write_text("why\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "notes")
    git(repo, "checkout", "-q", "main")
    if method == "merge":
        git(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #7", "feature")
    elif method == "squash":
        git(repo, "merge", "-q", "--squash", "feature")
        git(repo, "commit", "-q", "-m", "retrain (#7)")
    else:  # rebase: the pull request's commits replayed onto main, one by one
        git(repo, "rebase", "-q", "main", "feature")
        git(repo, "checkout", "-q", "main")
        git(repo, "merge", "-q", "--ff-only", "feature")
    return repo, before, git(repo, "rev-parse", "HEAD")


def _pull(
    ghserver, repo: Path, before: str, after: str, *, head_files: dict[str, bytes] | None = None
):
    gh_repo = ghserver.repos.get(REPO) or ghserver.add_repo(REPO)
    gh_repo.permissions["bob"] = "write"
    merged = tree(repo, after)
    pull = gh_repo.add_pull(
        7,
        author="carol",
        base_files=tree(repo, before),
        head_files=head_files or merged,
        head_sha=fake_sha("pr7-head"),
        base_sha=before,
    )
    return pull, merged


def _deploy(
    tmp_path: Path,
    repo: Path,
    before: str,
    after: str,
    registry: Path,
    options: tuple[str, ...] = ("--environment", "staging"),
) -> int:
    from mlops_ci import cli

    builds = tmp_path / "builds"
    write_build(builds / "iris", repo / "models/iris/model.yaml")
    return cli.main(
        [
            *("deploy", "--registry", str(registry), "--builds", str(builds)),
            *("--repo", str(repo), "--sha", after, "--base", before, *options),
        ]
    )


@pytest.fixture
def gh_env(ghserver, monkeypatch):
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
    monkeypatch.setenv("GITHUB_RUN_ID", "99")
    return ghserver


@pytest.mark.parametrize("method", ["merge", "squash", "rebase"])
def test_an_approved_merge_deploys_with_a_deployment(
    gh_env, tmp_path: Path, method: str, capsys
) -> None:
    repo, before, after = _merged_push(tmp_path, method)
    pull, _ = _pull(gh_env, repo, before, after)
    review = pull.add_review("bob", "APPROVED")
    # A rebase merge lands each commit of the pull request; GitHub associates each with it.
    rebased = git(repo, "rev-list", f"{before}..{after}~1").split() if method == "rebase" else []
    pull.merge(after, files=tree(repo, after), rebased=rebased)
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 0, capsys.readouterr()
    reg = open_registry(registry)
    release = reg.release("iris", reg.serving_version("iris"))
    assert release["version"] == "1.1.0" and release["commit"] == after
    assert release["pull_request"]["number"] == 7
    assert release["pull_request"]["head_sha"] == pull.head_sha
    assert [(a["login"], a["review_id"]) for a in release["approvers"]] == [("bob", review["id"])]
    assert release["run_url"] == f"https://github.example/{REPO}/actions/runs/99"
    [deployment] = gh_env.repos[REPO].deployments
    assert (deployment["sha"], deployment["environment"]) == (after, "staging")
    assert deployment["payload"]["audit_head"] == release["audit"]["sha256"]
    assert deployment["payload"]["approvers"][0]["login"] == "bob"
    assert [s["state"] for s in deployment["statuses"]] == ["in_progress", "success"]
    assert deployment["statuses"][-1]["log_url"] == release["run_url"]
    # the reviews the gate judged are the ones the release names: listed once
    assert len(gh_env.calls("GET", rf"/repos/{REPO}/pulls/7/reviews")) == 1


def test_an_admin_merge_without_approval_is_refused_and_recorded(
    gh_env, tmp_path: Path, capsys
) -> None:
    repo, before, after = _merged_push(tmp_path)
    pull, _ = _pull(gh_env, repo, before, after)
    pull.merge(after)  # branch protection bypassed: no approval
    # A forged governance status on the head changes nothing: deploy decides for itself.
    gh_env.repos[REPO].statuses.append(
        {
            "sha": pull.head_sha,
            "context": "mlops-ci/governance",
            "state": "success",
            "description": "Approved",
        }
    )
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 1
    assert "merged without the approvals" in capsys.readouterr().out
    reg = open_registry(registry)
    assert reg.models() == []
    [record] = audit.records(reg)
    assert (record["action"], record["model"], record["commit"]) == ("refused", "iris", after)
    assert "#7 was merged without the approvals" in record["reason"]
    [deployment] = gh_env.repos[REPO].deployments
    assert [s["state"] for s in deployment["statuses"]] == ["in_progress", "failure"]


def test_an_approval_given_after_an_admin_merge_does_not_deploy_it(
    gh_env, tmp_path: Path, capsys
) -> None:
    """The gate's decision as it stood at merge: an owner approving the merged pull request
    afterwards must not let a re-run of the publish deploy what was merged without approval."""
    repo, before, after = _merged_push(tmp_path)
    pull, _ = _pull(gh_env, repo, before, after)
    pull.merge(after, files=tree(repo, after))  # an admin merge, no approval
    late = pull.add_review("bob", "APPROVED")
    merged = datetime.fromisoformat(pull.merged_at)
    late["submitted_at"] = (merged + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 1
    assert "merged without the approvals" in capsys.readouterr().out
    assert open_registry(registry).models() == []
    # The same approval given before the merge deploys.
    late["submitted_at"] = pull.merged_at
    assert _deploy(tmp_path, repo, before, after, registry) == 0


def test_a_change_request_dismissed_after_an_admin_merge_still_blocks_it(
    gh_env, tmp_path: Path, capsys
) -> None:
    """A dismissed review keeps its `submitted_at`: only the timeline says when it stopped
    counting. One that blocked at the merge still blocks a re-run of the publish."""
    repo, before, after = _merged_push(tmp_path)
    pull, _ = _pull(gh_env, repo, before, after)
    pull.add_review("bob", "APPROVED")
    blocking = pull.add_review("dave", "CHANGES_REQUESTED")
    pull.merge(after, files=tree(repo, after))  # an admin merge over the change request
    merged = datetime.fromisoformat(pull.merged_at)
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 1
    pull.dismiss(blocking, at=(merged + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert _deploy(tmp_path, repo, before, after, registry) == 1
    assert open_registry(registry).models() == []
    # Dismissed before the merge, it did not block the merge, nor does it block the deploy.
    pull.timeline[-1]["created_at"] = (merged - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _deploy(tmp_path, repo, before, after, registry) == 0, capsys.readouterr()


def test_a_direct_push_is_refused(gh_env, tmp_path: Path, capsys) -> None:
    repo, before, after = _merged_push(tmp_path)
    pull, _ = _pull(gh_env, repo, before, after)
    pull.add_review("bob", "APPROVED")  # approved, but never merged: main was pushed directly
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 1
    [record] = audit.records(open_registry(registry))
    assert record["action"] == "refused" and "direct push" in record["reason"]


def test_an_artifact_changed_after_the_approval_is_refused(gh_env, tmp_path: Path, capsys) -> None:
    repo, before, after = _merged_push(tmp_path)
    approved = tree(repo, after)
    approved["models/iris/model.skops"] = approved["models/iris/model.skops"] + b"approved-bytes"
    pull, _ = _pull(gh_env, repo, before, after, head_files=approved)
    pull.add_review("bob", "APPROVED")
    pull.merge(after, files=tree(repo, after))  # what landed is not what was approved
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 1
    [record] = audit.records(open_registry(registry))
    assert (
        "models/iris/model.skops" in record["reason"]
        and "not the file approved" in record["reason"]
    )
    assert open_registry(registry).models() == []


def test_a_model_renamed_to_another_model_s_name_is_refused(gh_env, tmp_path: Path, capsys) -> None:
    """wine (low risk, owner @alice) renamed to iris, which the registry serves for other
    owners: its pull request was approved as wine's, so the push must not publish over iris."""
    import yaml

    repo, before, _ = _merged_push(tmp_path)
    git(repo, "checkout", "-q", "-b", "rename", before)
    wine = write_model(repo, "wine")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "wine")
    before = git(repo, "rev-parse", "HEAD")
    doc = yaml.safe_load(wine.read_text())
    doc["metadata"]["name"] = "iris"
    doc["metadata"]["version"] = "9.0.0"
    wine.write_text(yaml.safe_dump(doc, sort_keys=False))
    git(repo, "commit", "-q", "-am", "wine is iris now")
    after = git(repo, "rev-parse", "HEAD")
    pull, _ = _pull(gh_env, repo, before, after)
    pull.add_review("bob", "APPROVED")
    pull.merge(after, files=tree(repo, after))
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 1
    [record] = audit.records(open_registry(registry))
    assert record["action"] == "refused"
    assert (
        "models/wine/model.yaml: model 'iris' is also the name of models/iris/model.yaml"
        in (record["reason"])
    )
    assert open_registry(registry).models() == []


# --- `mlops-ci run`'s deploy stage ----------------------------------------------------------------


def test_run_deploys_into_a_local_registry_and_says_no_approvals_were_checked(
    tmp_path: Path, capsys
) -> None:
    from mlops_ci import cli

    repo = tmp_path / "repo"
    write_model(repo)
    (repo / ".git").mkdir()  # the repository root for artifact paths
    code = cli.main(["run", str(repo), "--stages", "validate,convert,test,deploy"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "version 1 (new; local: no approvals checked)" in out
    reg = open_registry(repo / ".mlops-ci/registry")
    assert reg.serving_version("iris") == 1
    [record] = audit.records(reg)
    assert (record["source"], record["pull_request"], record["approvers"]) == ("local", None, [])
    assert reg.release("iris", 1)["source"] == "local"
    # Again: the same bytes change nothing.
    assert cli.main(["run", str(repo), "--stages", "validate,convert,test,deploy"]) == 0
    assert "version 1 (unchanged;" in capsys.readouterr().out
    assert len(audit.records(reg)) == 1
    # A retrain tried locally is compared with what the last run deployed, as a pull request
    # is with the serving version (the report said "no deployed version to compare with").
    assert cli.main(["run", str(repo), "--stages", "validate,convert,test,bench"]) == 0, (
        capsys.readouterr().out
    )
    report = (repo / ".mlops-ci/run/report.md").read_text(encoding="utf-8")
    assert "**Against the deployed version**" in report
    baseline = json.loads((repo / ".mlops-ci/run/iris/baseline.json").read_text())
    assert (baseline["registry_version"], baseline["version"]) == (1, "1.0.0")
    assert "no deployed version to compare with" not in report


# --- the pull request's baseline -----------------------------------------------------------------


def test_baseline_fetches_the_serving_onnx_or_says_why_not(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from mlops_ci import baseline, cli

    registry = tmp_path / "registry"
    reg = open_registry(registry)
    deploy.publish(reg, candidate("iris", "1.0.0"), LOCAL)
    deploy.publish(reg, candidate("iris", "1.1.0", salt="b"), LOCAL)
    deploy.rollback(reg, "iris", 1, "bad", LOCAL)
    matrix = json.dumps({"include": [{"name": "iris"}, {"name": "new-model"}]})
    out = tmp_path / "out"
    assert (
        cli.main(["baseline", "--registry", str(registry), "--matrix", matrix, "--out", str(out)])
        == 0
    )
    assert (out / "iris/baseline.onnx").read_bytes() == candidate().onnx  # what serves: version 1
    doc = json.loads((out / "iris/baseline.json").read_text())
    assert (doc["registry_version"], doc["version"], doc["reason"]) == (1, "1.0.0", None)
    assert "not deployed yet" in json.loads((out / "new-model/baseline.json").read_text())["reason"]
    # No read key (its secrets unset, or a fork's run): the report says why there is no
    # comparison and which secret to set.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    fork = tmp_path / "fork"
    assert (
        cli.main(
            ["baseline", "--registry", "s3://bucket/r", "--matrix", matrix, "--out", str(fork)]
        )
        == 0
    )
    reason = json.loads((fork / "iris/baseline.json").read_text())["reason"]
    assert "no read credentials" in reason and "registry-read-access-key-id" in reason
    assert not (fork / "iris/baseline.onnx").exists()
    # A registry folder that is not there is a wrong path, not a model never deployed.
    missing = baseline.fetch(str(tmp_path / "registy"), ["iris"], tmp_path / "typo")
    assert "the registry could not be read" in missing["iris"]["reason"]
    assert "no such folder" in missing["iris"]["reason"]


def test_baseline_writes_only_inside_its_folder_whatever_the_matrix_names(tmp_path: Path) -> None:
    """The matrix comes from the pull request's plan, which takes any string as a model name:
    `../escaped` wrote a file outside --out, and its failure took every model's baseline."""
    from mlops_ci import baseline

    registry = tmp_path / "registry"
    deploy.publish(open_registry(registry), candidate("iris", "1.0.0"), LOCAL)
    out = tmp_path / "deep" / "out"
    found = baseline.fetch(str(registry), ["../escaped", "/tmp/abs", "iris"], out)
    assert not (tmp_path / "deep" / "escaped").exists()
    assert {p.relative_to(out).as_posix() for p in out.rglob("*")} == {
        "iris", "iris/baseline.onnx", "iris/baseline.json"
    }  # fmt: skip
    assert found["iris"]["reason"] is None and found["iris"]["registry_version"] == 1
    assert "is not a model name" in found["../escaped"]["reason"]


def test_a_failed_smoke_test_rolls_back_to_the_version_before(tmp_path: Path, capsys) -> None:
    repo, before, _ = _merged_push(tmp_path, "squash")
    manifest = repo / "models/iris/model.yaml"
    manifest.write_text(manifest.read_text().replace("label: 0", "label: 1"))  # wrong expectation
    git(repo, "commit", "-q", "-am", "a test case the model fails")
    after = git(repo, "rev-parse", "HEAD")
    registry = tmp_path / "registry"
    reg = open_registry(registry)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    code = _deploy(tmp_path, repo, before, after, registry, options=("--local",))
    out = capsys.readouterr().out
    assert code == 1, out
    assert "smoke test failed" in out and "rolled back to version 1" in out
    assert reg.serving_version("iris") == 1
    assert [r["action"] for r in audit.records(reg)] == ["deploy", "deploy", "smoke-failed"]
    assert audit.verify(reg).ok
    # A re-run of the same commit leaves the rollback standing.
    assert (
        deploy.publish(
            reg, deploy.load_candidate(load(manifest, repo), tmp_path / "builds" / "iris"), LOCAL
        ).changed
        is False
    )
    assert reg.serving_version("iris") == 1


def test_a_first_version_that_fails_its_smoke_test_is_recorded(tmp_path: Path, capsys) -> None:
    """Nothing to roll back to: it keeps serving, and a `smoke-failed` record says so, so
    `audit show` and the catalog tell what served and why."""
    from mlops_ci import cli
    from mlops_ci.catalog.read import read_catalog

    repo, before, _ = _merged_push(tmp_path, "squash")
    manifest = repo / "models/iris/model.yaml"
    manifest.write_text(manifest.read_text().replace("label: 0", "label: 1"))
    git(repo, "commit", "-q", "-am", "a test case the model fails")
    after = git(repo, "rev-parse", "HEAD")
    registry = tmp_path / "registry"
    builds = tmp_path / "builds"
    write_build(builds / "iris", manifest)
    args = ["deploy", "--local", "--registry", str(registry), "--builds", str(builds)]
    code = cli.main([*args, "--repo", str(repo), "--sha", after, "--base", before])
    out = capsys.readouterr().out
    assert code == 1 and "no earlier version to roll back to" in out, out
    reg = open_registry(registry)
    deployed, failed = audit.records(reg)
    assert deployed["action"] == "deploy"
    assert (failed["action"], failed["registry_version"]) == ("smoke-failed", 1)
    assert "smoke test failed" in failed["reason"]
    shown = audit.show(reg, "iris")["serving"]
    assert (shown["registry_version"], shown["set_by"]) == (1, "smoke-failed")
    [model] = read_catalog(reg, "test").models
    assert [(s.number, s.end) for s in model.served] == [(1, None)]
    assert audit.verify(reg).ok


def test_the_report_shows_why_there_is_no_baseline_and_the_metric_deltas(tmp_path: Path) -> None:
    from mlops_ci.report import markdown
    from mlops_ci.report.results import gather

    folder = tmp_path / "reports" / "iris"
    folder.mkdir(parents=True)
    metric = {"kind": "metric", "name": "accuracy", "status": "pass", "value": 0.95}
    (folder / "test.json").write_text(
        json.dumps({"model": "iris", "version": "1.1.0", "passed": True, "checks": [metric]})
    )
    (folder / "bench.json").write_text(
        json.dumps({"model": "iris", "passed": True, "baseline": None})
    )
    reason = "no read credentials for the registry (a fork's pull request gets no secrets)"
    (folder / "baseline.json").write_text(json.dumps({"model": "iris", "reason": reason}))
    text = markdown.render(gather(tmp_path / "reports"), context="local")
    assert reason in text and "no deployed version to compare with" not in text
    serving = {
        "model": "iris",
        "reason": None,
        "version": "1.0.0",
        "registry_version": 1,
        "results": {"test": {"checks": [{**metric, "value": 0.93}]}},
    }
    (folder / "baseline.json").write_text(json.dumps(serving))
    text = markdown.render(gather(tmp_path / "reports"), context="local")
    assert "Metrics against the deployed version 1.0.0" in text
    assert "0.95 (deployed 0.93, +0.02)" in text


# --- what a release keeps of the stages' results ------------------------------------------------


def test_release_keeps_latency_and_test_results_that_the_catalog_reads(tmp_path: Path) -> None:
    """bench.json and test.json as the bench and test stages write them (their own to_json)
    end up in release.json's `results`, and the catalog finds the p50 there."""
    from mlops_ci import bench, evaluate
    from mlops_ci.catalog.read import version_from_release

    repo = tmp_path / "repo"
    manifest = write_model(repo)
    (repo / ".git").mkdir()
    build = write_build(tmp_path / "build", manifest)

    def measured(engine: str, size: int, p50: float) -> bench.Measurement:
        return bench.Measurement(engine, size, 100, p50, p50 * 2, p50 * 3, p50, size / p50 * 1e3)

    result = bench.BenchResult(
        model="iris",
        version="1.0.0",
        manifest="models/iris/model.yaml",
        machine={"cpu": "test"},
        settings={},
        measurements=(
            measured("onnx", 1, 0.05),
            measured("onnx", 32, 0.4),
            measured("native", 1, 0.5),
            measured("baseline", 1, 0.06),
        ),
        budgets=(bench.BudgetCheck(1, "p99_ms", 5.0, 0.15),),
    )
    (build / "bench.json").write_text(json.dumps(result.to_json()))
    test = evaluate.TestResult(
        "iris",
        "1.0.0",
        "models/iris/model.yaml",
        "model.onnx",
        (evaluate.Check("metric", "accuracy", "pass", "0.97 ≥ 0.9", value=0.97, min=0.9),),
    )
    (build / "test.json").write_text(json.dumps(test.to_json()))

    reg = open_registry(tmp_path / "registry")
    deploy.publish(reg, deploy.load_candidate(load(manifest, repo), build), LOCAL)
    results = reg.release("iris", 1)["results"]
    assert results["bench"]["passed"] is True
    assert [
        (m["engine"], m["batch_size"], m["p50_ms"]) for m in results["bench"]["measurements"]
    ] == [
        ("onnx", 1, 0.05),
        ("onnx", 32, 0.4),
        ("native", 1, 0.5),
    ]
    assert results["bench"]["measurements"][0]["p99_ms"] == 0.15
    assert results["bench"]["budgets"][0]["metric"] == "p99_ms"
    assert results["test"]["passed"] is True
    assert results["test"]["checks"][0]["value"] == 0.97

    version = version_from_release(1, reg.release("iris", 1))
    assert version.p50_ms == 0.05
    assert [(m.batch_size, m.p50_ms) for m in version.latency] == [(1, 0.05), (32, 0.4)]
    assert [(m.name, m.value) for m in version.metrics] == [("accuracy", 0.97)]


# --- errors that are not verdicts still fail closed, on the record ------------------------------


def test_an_unreachable_github_refuses_on_the_record(
    gh_env, tmp_path: Path, monkeypatch, capsys
) -> None:
    from s3servers import free_port

    repo, before, after = _merged_push(tmp_path)
    pull, _ = _pull(gh_env, repo, before, after)
    pull.add_review("bob", "APPROVED")
    pull.merge(after, files=tree(repo, after))
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 2
    assert "cannot reach" in capsys.readouterr().err
    reg = open_registry(registry)
    assert reg.models() == []
    [record] = audit.records(reg)
    assert (record["action"], record["model"], record["commit"]) == ("refused", "iris", after)
    assert "deploy stopped by an error" in record["reason"] and "cannot reach" in record["reason"]
    assert audit.verify(reg).ok


def test_a_missing_build_refuses_on_the_record_with_a_failed_deployment(
    gh_env, tmp_path: Path, capsys
) -> None:
    from mlops_ci import cli

    repo, before, after = _merged_push(tmp_path)
    pull, _ = _pull(gh_env, repo, before, after)
    pull.add_review("bob", "APPROVED")
    pull.merge(after, files=tree(repo, after))
    registry = tmp_path / "registry"
    args = ["deploy", "--registry", str(registry), "--builds", str(tmp_path / "nothing-here")]
    assert cli.main([*args, "--repo", str(repo), "--sha", after, "--base", before]) == 2
    assert "no build of iris" in capsys.readouterr().err
    reg = open_registry(registry)
    assert reg.models() == []
    [record] = audit.records(reg)
    assert (record["action"], record["model"]) == ("refused", "iris")
    assert "no build of iris" in record["reason"]
    assert record["pull_request"]["number"] == 7  # re-verified before the build was looked for
    [deployment] = gh_env.repos[REPO].deployments
    assert [s["state"] for s in deployment["statuses"]] == ["in_progress", "failure"]
    assert deployment["payload"]["audit_head"] == audit.digest(audit.encode(record))


def test_an_error_after_the_deployment_started_marks_it_failed(
    gh_env, tmp_path: Path, monkeypatch, capsys
) -> None:
    repo, before, after = _merged_push(tmp_path)
    pull, _ = _pull(gh_env, repo, before, after)
    pull.add_review("bob", "APPROVED")
    pull.merge(after, files=tree(repo, after))

    def registry_gone(*args: object, **kwargs: object) -> None:
        raise RegistryError("s3://bucket/r: cannot read iris/2/model.onnx: connection reset")

    monkeypatch.setattr(deploy, "smoke_test", registry_gone)
    registry = tmp_path / "registry"
    assert _deploy(tmp_path, repo, before, after, registry) == 2
    assert "smoke test did not finish" in capsys.readouterr().out
    [deployment] = gh_env.repos[REPO].deployments
    assert [s["state"] for s in deployment["statuses"]] == ["in_progress", "failure"]
    assert "connection reset" in deployment["statuses"][-1]["description"]
    # It was published (and recorded as such) before the error: no refusal is recorded for it.
    assert [r["action"] for r in audit.records(open_registry(registry))] == ["deploy"]


@pytest.mark.parametrize("hidden", ["tritonclient", "google.protobuf"])
def test_without_the_deploy_extra_a_rollback_says_what_to_install(
    tmp_path: Path, hidden: str
) -> None:
    """tritonclient and protobuf are the `deploy` extra, not core dependencies (`validate`
    needs neither): without them, a command that writes config.pbtxt exits 2 and says so."""
    import subprocess
    import sys

    registry = tmp_path / "registry"
    reg = open_registry(registry)
    deploy.publish(reg, candidate(version="1.0.0"), LOCAL)
    deploy.publish(reg, candidate(version="1.1.0", salt="b"), LOCAL)
    probe = (
        "import sys\n"
        f"sys.modules[{hidden!r}] = None  # as if it were not installed\n"
        "from mlops_ci.cli import main\n"
        "sys.exit(main(['rollback', 'iris', '--to', '1', '--reason', 'r', '--local',"
        f" '--registry', {str(registry)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "pip install 'mlops-ci[deploy]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert reg.serving_version("iris") == 2
    assert len(audit.records(reg)) == 2


def test_a_build_of_other_bytes_is_refused_on_the_record(gh_env, tmp_path: Path, capsys) -> None:
    """A verdict found late (the build converted another artifact than the manifest pins)
    is a refusal like any other: exit 1, recorded, a failed Deployment."""
    from mlops_ci import cli

    repo, before, after = _merged_push(tmp_path)
    pull, _ = _pull(gh_env, repo, before, after)
    pull.add_review("bob", "APPROVED")
    pull.merge(after, files=tree(repo, after))
    stale = tmp_path / "stale-repo"
    builds = tmp_path / "builds"
    write_build(builds / "iris", write_model(stale, version="1.0.0"))  # not the merged artifact
    registry = tmp_path / "registry"
    args = ["deploy", "--registry", str(registry), "--builds", str(builds), "--repo", str(repo)]
    assert cli.main([*args, "--sha", after, "--base", before]) == 1
    assert "refusing to publish an unproven conversion" in capsys.readouterr().err
    reg = open_registry(registry)
    [record] = audit.records(reg)
    assert record["action"] == "refused"
    assert "refusing to publish an unproven conversion" in record["reason"]
    assert not record["reason"].startswith("deploy stopped by an error")
    [deployment] = gh_env.repos[REPO].deployments
    assert [s["state"] for s in deployment["statuses"]] == ["in_progress", "failure"]
    assert reg.models() == []


def test_deploy_summary_keeps_pushed_text_inert(tmp_path: Path, monkeypatch, capsys) -> None:
    # Refusal lines quote manifests and paths from the push: in the job summary they must not
    # become HTML, a mention or a new list item.
    from mlops_ci.deploy_push import Outcome, _report

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    line = "refused: models/<img src=x onerror=alert(1)>/model.yaml @acme/admins\n- ✅ forged"
    _report([Outcome("fraud`</code>", False, line)], "text")
    text = summary.read_text(encoding="utf-8")
    assert "<img" not in text and "@acme" not in text and "\n- ✅ forged" not in text
    assert "</code>" not in text.replace("</code>:", "", 1)
