"""Versions asked for by path (`/v2/models/{m}/versions/{v}/…`): a worker keeps at most
`--version-cache` of them loaded besides the serving ones, however many a client walks through;
one evicted is loaded again (its digest checked again) when asked for; concurrent requests for
one version share one load; an unpublished version is never served. `serve`'s own App under
uvicorn, a real filesystem registry, onnxruntime sessions counted in the process."""

from __future__ import annotations

import gc
import http.client
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from serve_registry import ExampleModel, ServeProcess, publish, rollback
from uvicorn_thread import uvicorn_thread

from mlops_ci.serve.app import App, Settings

TUMOR = "tumor-classifier"
BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [1.0] * 30}]}
).encode()


def _published(models: dict[str, ExampleModel], root: Path, count: int) -> ExampleModel:
    """tumor-classifier published `count` times into `root` (versions 1…count, semvers 1.0.0
    on); the example model."""
    tumor = models[TUMOR]
    manifest = tumor.manifest.read_text(encoding="utf-8")
    for i in range(count):
        publish(root, TUMOR, tumor.onnx.read_bytes(), manifest, semver=f"1.0.{i}")
    return tumor


@pytest.fixture(scope="module")
def registry(
    example_models: dict[str, ExampleModel], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """tumor-classifier published 8 times (versions 1–8, 8 serving)."""
    root = tmp_path_factory.mktemp("versions") / "registry"
    _published(example_models, root, 8)
    return root


def _sessions() -> int:
    """onnxruntime sessions alive in this process."""
    import onnxruntime as ort

    gc.collect()
    return sum(isinstance(o, ort.InferenceSession) for o in gc.get_objects())


@contextmanager
def _serving(root: Path, version_cache: int, poll_s: float = 0.1) -> Iterator[tuple[App, str]]:
    app = App(
        Settings(registry=str(root), prediction_log="", poll_s=poll_s, version_cache=version_cache)
    )
    with uvicorn_thread(app, http="httptools", loop="asyncio", log_level="critical") as hostport:
        yield app, hostport


def _infer(hostport: str, version: int) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(hostport, timeout=30)
    try:
        conn.request("POST", f"/v2/models/{TUMOR}/versions/{version}/infer", body=BODY)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _counter(hostport: str, name: str) -> float:
    conn = http.client.HTTPConnection(hostport, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    (value,) = [line.split()[1] for line in text.splitlines() if line.startswith(f"{name}_total ")]
    return float(value)


def _until(check: Any, what: str, timeout: float = 5.0) -> None:
    """Wait for the registry poller to see a change (it re-lists versions every 10th poll)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _walk(root: Path, version_cache: int) -> tuple[int, list[tuple[str, int]], float, float]:
    """Ask versions 1–7 by path once each: (sessions held, cached, loads, evictions)."""
    before = _sessions()
    with _serving(root, version_cache) as (app, hostport):
        for v in range(1, 8):
            status, reply = _infer(hostport, v)
            assert (status, reply.get("model_version")) == (200, str(v)), reply
        held = _sessions() - before
        assert app.store is not None
        cached = app.store.loaded()
        loads = _counter(hostport, "mlops_ci_model_version_loads")
        evictions = _counter(hostport, "mlops_ci_model_version_evictions")
    return held, cached, loads, evictions


def test_walking_through_versions_holds_at_most_the_cache_bound(registry: Path) -> None:
    # The naive way (what serve did: keep every version asked for while it is published): a
    # session per version walked through, plus the serving one.
    held, cached, loads, evictions = _walk(registry, version_cache=1000)
    assert (held, len(cached), loads, evictions) == (8, 7, 8, 0)

    held, cached, loads, evictions = _walk(registry, version_cache=2)
    assert held == 1 + 2, f"{held} sessions held after walking 7 versions"
    assert cached == [(TUMOR, 6), (TUMOR, 7)]  # the two most recently used
    assert (loads, evictions) == (8, 5)


def test_an_evicted_version_loads_again_and_a_used_one_stays(registry: Path) -> None:
    with _serving(registry, version_cache=2) as (app, hostport):
        assert app.store is not None
        for v in (1, 2, 1, 3):  # 1 used again before 3 arrives: 2 is the least recently used
            assert _infer(hostport, v)[0] == 200
        assert app.store.loaded() == [(TUMOR, 1), (TUMOR, 3)]
        assert _counter(hostport, "mlops_ci_model_version_loads") == 1 + 3
        status, reply = _infer(hostport, 2)  # evicted: loaded again
        assert (status, reply["model_version"]) == (200, "2")
        assert app.store.loaded() == [(TUMOR, 3), (TUMOR, 2)]
        assert _counter(hostport, "mlops_ci_model_version_loads") == 1 + 4
        assert _counter(hostport, "mlops_ci_model_version_evictions") == 2
        assert _infer(hostport, 8)[1]["model_version"] == "8"  # the serving one is never cached
        assert app.store.loaded() == [(TUMOR, 3), (TUMOR, 2)]


def test_no_cache_loads_on_each_request_and_holds_nothing(registry: Path) -> None:
    before = _sessions()
    with _serving(registry, version_cache=0) as (app, hostport):
        assert app.store is not None
        for v in (1, 1, 2):
            assert _infer(hostport, v)[1]["model_version"] == str(v)
        assert app.store.loaded() == []
        # The reply can reach us before the server's thread has dropped its last reference to
        # the request's session: wait for that, not for ever.
        deadline = time.monotonic() + 5
        while _sessions() - before > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sessions() - before == 1  # the serving version
        assert _counter(hostport, "mlops_ci_model_version_loads") == 1 + 3


def test_concurrent_requests_for_one_version_share_one_load(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_ci.serve.models import ModelStore

    real = ModelStore._build
    built: list[tuple[str, int]] = []

    def slow_build(self: ModelStore, name: str, n: int) -> Any:
        built.append((name, n))
        if n == 5:
            time.sleep(0.5)  # every request below arrives while version 5 loads
        return real(self, name, n)

    monkeypatch.setattr(ModelStore, "_build", slow_build)
    with _serving(registry, version_cache=2) as (_, hostport):
        start = threading.Barrier(8)
        results: list[tuple[int, dict[str, Any]]] = []

        def client() -> None:
            start.wait()
            results.append(_infer(hostport, 5))

        clients = [threading.Thread(target=client) for _ in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(30)
        assert [(s, r.get("model_version")) for s, r in results] == [(200, "5")] * 8
        assert built == [(TUMOR, 8), (TUMOR, 5)]  # the serving version, then 5 once
        assert _counter(hostport, "mlops_ci_model_version_loads") == 2


def test_an_evicted_version_is_digest_checked_again_and_an_unpublished_one_is_gone(
    example_models: dict[str, ExampleModel], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "registry"
    tumor = _published(example_models, root, 3)
    with _serving(root, version_cache=1) as (app, hostport):
        store = app.store
        assert store is not None
        assert _infer(hostport, 1)[0] == 200
        assert _infer(hostport, 2)[0] == 200  # evicts 1
        assert store.loaded() == [(TUMOR, 2)]
        # Version 1's bytes change after its release.json pinned their digest; loaded again,
        # it must be checked again, not trusted for having loaded once.
        (root / TUMOR / "1" / "model.onnx").write_bytes(tumor.onnx.read_bytes() + b"\0")
        status, reply = _infer(hostport, 1)
        assert status == 503 and "cannot be loaded" in reply["error"]
        assert "does not match" in caplog.text
        assert store.loaded() == [(TUMOR, 2)]

        # A cached version whose folder is removed is not served by path once the poller sees it.
        shutil.rmtree(root / TUMOR / "2")
        _until(lambda: store.loaded() == [], "version 2 stayed cached after its removal")
        assert _infer(hostport, 2)[0] == 404


def test_the_version_that_stopped_serving_stays_loaded_for_a_rollback(
    example_models: dict[str, ExampleModel], tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    _published(example_models, root, 2)
    with _serving(root, version_cache=2) as (app, hostport):
        store = app.store
        assert store is not None
        rollback(root, TUMOR, 1)
        # 2 no longer serves; it stays loaded
        _until(lambda: store.loaded() == [(TUMOR, 2)], "version 2 was dropped")
        rollback(root, TUMOR, 2)
        _until(lambda: store.loaded() == [(TUMOR, 1)], "version 1 was dropped")
        assert _counter(hostport, "mlops_ci_model_version_loads") == 2  # no load for the swaps
        assert _infer(hostport, 1)[1]["model_version"] == "1"


def test_the_flag_bounds_the_cache_of_a_served_registry(registry: Path) -> None:
    server = ServeProcess(registry, "--version-cache", "1", "--prediction-log", "off")
    try:
        for v in (1, 2, 3):
            assert _infer(server.hostport, v)[1]["model_version"] == str(v)
        loads = _counter(server.hostport, "mlops_ci_model_version_loads")
        evictions = _counter(server.hostport, "mlops_ci_model_version_evictions")
    finally:
        assert server.terminate() == 0, server.stderr()
    assert (loads, evictions) == (1 + 3, 2)


def test_a_version_a_killed_deploy_never_recorded_is_not_served_by_path(
    example_models: dict[str, ExampleModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy killed after its version folder was renamed in and before its audit record
    leaves version 3 whole and unrecorded. Nobody approved it as far as the log knows: it is
    not listed, not served by path, and not rolled back to. Once a re-run records it, it is."""
    from mlops_ci import audit, deploy
    from mlops_ci.errors import UsageError
    from mlops_ci.registry import open_registry

    root = tmp_path / "registry"
    tumor = _published(example_models, root, 2)
    _killed_before_its_record(tumor, root, "1.0.9", monkeypatch)
    reg = open_registry(root)
    assert (root / TUMOR / "3" / "model.onnx").is_file()  # whole: the naive listing has it
    assert reg.version_folders(TUMOR).numbers == [1, 2, 3]
    assert reg.versions(TUMOR) == [1, 2]
    with _serving(root, version_cache=2) as (_, hostport):
        status, reply = _infer(hostport, 3)
        assert status == 404 and "no version 3" in reply["error"], reply
        assert _infer(hostport, 2)[1]["model_version"] == "2"
    with pytest.raises(UsageError, match="did not record it"):
        deploy.rollback(reg, TUMOR, 3, "try it", deploy.Provenance())
    assert [r["action"] for r in audit.records(reg)] == ["deploy", "deploy"]

    assert _published_one(tumor, root, "1.0.9") == 3  # the re-run completes version 3
    assert reg.versions(TUMOR) == [1, 2, 3]
    with _serving(root, version_cache=2) as (_, hostport):
        assert _infer(hostport, 3)[1]["model_version"] == "3"


def test_a_version_without_its_marker_is_asked_of_the_log_once_not_every_look(
    example_models: dict[str, ExampleModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a version without its release marker is recorded can take a read of the whole
    log (on S3, every segment). The poller re-lists versions every tenth look: while the
    listing and config.pbtxt are unchanged, it asks the log again only once RECHECK_S has
    passed (a record may have landed without either changing)."""
    from mlops_ci import audit
    from mlops_ci.serve import models

    root = tmp_path / "registry"
    tumor = _published(example_models, root, 1)
    _killed_before_its_record(tumor, root, "1.0.9", monkeypatch)
    with _serving(root, version_cache=2, poll_s=3600) as (app, _):  # refresh by hand
        store = app.store
        assert store is not None
        asks: list[str] = []  # the log asked about versions without their marker
        reads: list[str] = []  # of those, whole-log reads
        published, read_log = store.registry.published, store.registry.read_log
        monkeypatch.setattr(
            store.registry, "published", lambda name, f: asks.append(name) or published(name, f)
        )
        monkeypatch.setattr(
            store.registry, "read_log", lambda key: reads.append(key) or read_log(key)
        )
        for _ in range(3):
            store.refresh(full=True)
        assert store.versions(TUMOR) == (1,) and asks == reads == []

        # A re-run killed right after its record: version 2 is recorded now, but neither the
        # listing nor config.pbtxt changed. It is asked again once RECHECK_S has passed.
        real = audit.commit

        def record_then_killed(reg: Any, pending: Any, *alongside: Any) -> None:
            reg.store.append(audit.LOG_KEY, pending.line + b"\n")
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(audit, "commit", record_then_killed)
            with pytest.raises(KeyboardInterrupt):
                _published_one(tumor, root, "1.0.9")
        assert audit.commit is real
        store.refresh(full=True)
        assert store.versions(TUMOR) == (1,) and asks == []
        monkeypatch.setattr(models, "RECHECK_S", 0.0)  # as if RECHECK_S had passed
        store.refresh(full=True)
        assert store.versions(TUMOR) == (1, 2) and store.get(TUMOR).version == 1
        assert (asks, reads) == ([TUMOR], [])  # found at the log's end: not read whole
        store.refresh(full=True)
        assert asks == [TUMOR]  # all listed: nothing is asked again

        _published_one(tumor, root, "1.0.9")  # the next run serves it (and writes its marker)
        store.refresh(full=True)
        assert store.versions(TUMOR) == (1, 2) and store.get(TUMOR).version == 2


def _killed_before_its_record(
    tumor: ExampleModel, root: Path, semver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish of `semver` killed after its version folder and before its audit record."""
    from mlops_ci import audit

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as if killed right here

    with monkeypatch.context() as patch:
        patch.setattr(audit, "commit", killed)
        with pytest.raises(KeyboardInterrupt):
            _published_one(tumor, root, semver)


def _published_one(tumor: ExampleModel, root: Path, semver: str) -> int:
    return publish(
        root, TUMOR, tumor.onnx.read_bytes(), tumor.manifest.read_text("utf-8"), semver=semver
    )


@pytest.mark.parametrize("serving", [2, 3], ids=["the same version serves", "another serves"])
def test_a_registry_replaced_under_the_server_serves_its_own_bytes(
    example_models: dict[str, ExampleModel], tmp_path: Path, serving: int
) -> None:
    """Version numbers never repeat in a registry, but a registry can be replaced under a
    running server (a laptop's registry deleted and deployed into again): versions 1 and 2 are
    other bytes now, and 2 or 3 serves. The server never answers with the replaced bytes:
    neither version 1, loaded by path, nor version 2, which served (reloaded when it serves
    again; not kept loaded for a rollback, as a version that stops serving otherwise is)."""
    import hashlib

    import onnx

    root, fresh = tmp_path / "registry", tmp_path / "fresh"
    tumor = _published(example_models, root, 2)
    model = onnx.load_from_string(tumor.onnx.read_bytes())
    model.metadata_props.add(key="rebuilt", value="yes")  # the same model, other bytes
    other = model.SerializeToString()
    manifest = tumor.manifest.read_text(encoding="utf-8")
    for i in range(serving):
        publish(fresh, TUMOR, other, manifest, semver=f"2.0.{i}")
    old_sha, new_sha = (hashlib.sha256(b).hexdigest() for b in (tumor.onnx.read_bytes(), other))
    with _serving(root, version_cache=2, poll_s=3600) as (app, hostport):  # refresh by hand
        store = app.store
        assert store is not None
        assert _infer(hostport, 1)[0] == 200  # version 1 loaded by path
        cached = dict(store._cache)
        assert cached[TUMOR, 1].onnx_sha256 == old_sha
        shutil.rmtree(root)
        fresh.rename(root)  # between two looks of the poller
        store.refresh(list_models=False)
        now = store.get(TUMOR)
        assert (now.version, now.onnx_sha256) == (serving, new_sha)
        assert store.loaded() == []  # neither the old version 1 nor the old 2 is kept
        assert _infer(hostport, 1)[0] == 200
        assert store._cache[TUMOR, 1].onnx_sha256 == new_sha
        assert _counter(hostport, "mlops_ci_model_version_loads") == 4


# SeaweedFS keeps a deleted object's folders, so its replaced registry numbers on from 3.
@pytest.mark.parametrize("registry_uri", ["fs", "moto_s3"], ids=["fs", "moto"], indirect=True)
def test_a_replaced_registry_is_noticed_on_a_folder_and_on_s3(
    example_models: dict[str, ExampleModel], registry_uri: str
) -> None:
    """The same version serves in the replaced registry, under a config.pbtxt of the very same
    bytes: on S3 its ETag does not change (it did not notice, and kept the old bytes)."""
    import hashlib

    import onnx

    from mlops_ci.registry import open_registry
    from mlops_ci.serve.metrics import Metrics
    from mlops_ci.serve.models import ModelStore

    tumor = example_models[TUMOR]
    manifest = tumor.manifest.read_text(encoding="utf-8")
    model = onnx.load_from_string(tumor.onnx.read_bytes())
    model.metadata_props.add(key="rebuilt", value="yes")  # the same model, other bytes
    old, other = tumor.onnx.read_bytes(), model.SerializeToString()
    for i in range(2):
        publish(registry_uri, TUMOR, old, manifest, semver=f"1.0.{i}")
    reg = open_registry(registry_uri)
    store = ModelStore(open_registry(registry_uri), Metrics(), log_enabled=False)
    store.refresh(full=True)
    assert store.get(TUMOR).onnx_sha256 == hashlib.sha256(old).hexdigest()
    config = reg.read_bytes(f"{TUMOR}/config.pbtxt")
    if registry_uri.startswith("s3://"):
        for key in reg.list_keys(""):
            reg.store.delete(key)
    else:
        shutil.rmtree(registry_uri)
    time.sleep(1.1)  # S3's Last-Modified counts seconds
    for i in range(2):
        publish(registry_uri, TUMOR, other, manifest, semver=f"2.0.{i}")
    assert reg.read_bytes(f"{TUMOR}/config.pbtxt") == config
    store.refresh(list_models=False)
    assert store.get(TUMOR).onnx_sha256 == hashlib.sha256(other).hexdigest()
    store.stop()
