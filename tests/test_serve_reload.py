"""`serve` follows the registry while it serves: deploys and rollbacks under load without a failed
request, nothing half-written or tampered with is ever served, the prediction log holds its
sampled share and survives SIGTERM, and an S3 registry serves like a folder."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_registry import (
    ExampleModel,
    ServeProcess,
    point_at,
    publish,
    rollback,
    with_sample_rate,
)

TUMOR = "tumor-classifier"


@pytest.fixture(scope="module")
def second_tumor_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Another model with tumor-classifier's signature (a logistic regression), so that two
    versions give different answers."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 30]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        final_types=None,
        target_opset=17,
    )
    for out, name in zip(onx.graph.output, ("label", "probabilities"), strict=True):
        for node in onx.graph.node:
            node.output[:] = [name if o == out.name else o for o in node.output]
        out.name = name
    return bytes(onx.SerializeToString())


def _post(
    conn: http.client.HTTPConnection, model: str, body: bytes, version: str = ""
) -> tuple[int, dict[str, Any]]:
    path = f"/v2/models/{model}{'/versions/' + version if version else ''}/infer"
    conn.request("POST", path, body=body)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def _tumor_body(rows: int = 1, request_id: str | None = None) -> bytes:
    x = np.random.default_rng(rows).uniform(0, 30, size=(rows, 30)).astype(np.float32)
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "shape": [rows, 30],
                "datatype": "FP32",
                "data": x.reshape(-1).tolist(),
            }
        ]
    }
    if request_id:
        doc["id"] = request_id
    return json.dumps(doc).encode()


def _wait_for_version(server: ServeProcess, want: str, timeout: float = 2.0) -> float:
    conn = http.client.HTTPConnection(server.hostport, timeout=5)
    t0 = time.perf_counter()
    try:
        while True:
            status, doc = _post(conn, TUMOR, _tumor_body())
            assert status == 200, doc
            if doc["model_version"] == want:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                raise AssertionError(
                    f"still serving {doc['model_version']}, not {want}, after {timeout} s"
                )
            time.sleep(0.02)
    finally:
        conn.close()


def test_deploy_and_rollback_under_load_switch_within_2s_and_fail_nothing(
    example_models: dict[str, ExampleModel], second_tumor_model: bytes, tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    tumor = example_models[TUMOR]
    manifest = tumor.manifest.read_text(encoding="utf-8")
    assert publish(root, TUMOR, tumor.onnx.read_bytes(), manifest) == 1
    server = ServeProcess(root, "--poll", "0.2")
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        conn = http.client.HTTPConnection(server.hostport, timeout=10)
        body = _tumor_body(4)
        while not stop.is_set():
            status, doc = _post(conn, TUMOR, body)
            statuses[status] += 1
            versions[doc.get("model_version", "?")] += 1
        conn.close()

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        time.sleep(0.3)
        assert publish(root, TUMOR, second_tumor_model, manifest, semver="1.1.0") == 2
        assert _wait_for_version(server, "2") < 2.0  # a deploy
        rollback(root, TUMOR, 1)
        assert _wait_for_version(server, "1") < 2.0  # a rollback
        rollback(root, TUMOR, 2)
        assert _wait_for_version(server, "2") < 2.0
        time.sleep(0.2)
    finally:
        stop.set()
        for w in workers:
            w.join()
        code = server.terminate()
    assert code == 0, server.stderr()
    assert set(statuses) == {200}, statuses
    assert versions["1"] > 0 and versions["2"] > 0
    assert sum(statuses.values()) > 100


def test_a_broken_or_vanished_version_is_never_served(
    example_models: dict[str, ExampleModel], second_tumor_model: bytes, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from mlops_ci.registry import RegistryError

    root = tmp_path / "registry"
    tumor = example_models[TUMOR]
    manifest = tumor.manifest.read_text(encoding="utf-8")
    publish(root, TUMOR, tumor.onnx.read_bytes(), manifest)
    publish(root, TUMOR, second_tumor_model, manifest, semver="1.1.0")
    publish(root, TUMOR, tumor.onnx.read_bytes(), manifest, semver="1.2.0")
    # Version 3's model.onnx is overwritten with other bytes after its release.json pinned the
    # digest: a copy interrupted half-way, or tampering. They are a valid model: the naive way,
    # onnxruntime loads them without a word.
    tampered = root / TUMOR / "3" / "model.onnx"
    tampered.write_bytes(second_tumor_model)
    ort.InferenceSession(str(tampered), providers=["CPUExecutionProvider"])
    with pytest.raises(RegistryError, match="does not match"):
        rollback(root, TUMOR, 3)  # deploy refuses it; a hand edit of config.pbtxt does not
    rollback(root, TUMOR, 1)
    server = ServeProcess(root, "--poll", "0.2")
    conn = http.client.HTTPConnection(server.hostport, timeout=5)
    try:
        assert _post(conn, TUMOR, _tumor_body())[1]["model_version"] == "1"
        point_at(root, TUMOR, 3)
        time.sleep(1.0)
        status, doc = _post(conn, TUMOR, _tumor_body())
        assert (status, doc["model_version"]) == (200, "1"), "the tampered version served"
        status, doc = _post(conn, TUMOR, _tumor_body(), version="3")
        assert status == 503 and "error" in doc
        assert "does not match release.json" in server.stderr()

        # config.pbtxt names a version that is not published (no release.json): keep serving.
        rollback(root, TUMOR, 2)
        _wait_for_version(server, "2")
        point_at(root, TUMOR, 9)
        time.sleep(1.0)
        status, doc = _post(conn, TUMOR, _tumor_body())
        assert (status, doc["model_version"]) == (200, "2")
        assert _post(conn, TUMOR, _tumor_body(), version="9")[0] == 404

        # A loaded version whose folder is deleted is no longer served by path.
        assert _post(conn, TUMOR, _tumor_body(), version="1")[0] == 200
        shutil.rmtree(root / TUMOR / "1")
        rollback(root, TUMOR, 2)  # any change of config.pbtxt makes the server look again
        time.sleep(1.0)
        assert _post(conn, TUMOR, _tumor_body(), version="1")[0] == 404
        assert _post(conn, TUMOR, _tumor_body())[0] == 200
    finally:
        conn.close()
        assert server.terminate() == 0, server.stderr()


def _parquet_rows(folder: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def test_prediction_log_holds_the_sampled_share_and_sigterm_loses_none(
    example_models: dict[str, ExampleModel], tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    tumor = example_models[TUMOR]
    rate = 0.25
    publish(
        root,
        TUMOR,
        tumor.onnx.read_bytes(),
        with_sample_rate(tumor.manifest.read_text(encoding="utf-8"), rate),
    )
    server = ServeProcess(root)  # flushes every 30 s: everything below rides on the SIGTERM
    requests, rows_per_request = 400, 2
    conn = http.client.HTTPConnection(server.hostport, timeout=5)
    try:
        for i in range(requests):
            status, _ = _post(conn, TUMOR, _tumor_body(rows_per_request, request_id=f"req-{i}"))
            assert status == 200
    finally:
        conn.close()
    assert not list((root / ".mlops").rglob("*.parquet")), "written before the flush was due"
    assert server.terminate() == 0, server.stderr()

    table = _parquet_rows(root / ".mlops" / "predictions" / TUMOR)
    sampled = requests * rate
    assert table is not None
    assert table.num_rows in {(sampled + d) * rows_per_request for d in (-1, 0, 1)}
    columns = tumor.document["spec"]["signature"]["inputs"][0]["columns"]
    assert table.column_names == [
        "time",
        "model_version",
        "request_id",
        *columns,
        "output.label",
        "output.probabilities",
    ]
    ids = table.column("request_id").to_pylist()
    assert all(i.startswith("req-") for i in ids) and len(set(ids)) * rows_per_request == len(ids)
    assert set(table.column("model_version").to_pylist()) == {1}
    partitions = {p.name for p in (root / ".mlops" / "predictions" / TUMOR).iterdir()}
    assert partitions == {f"date={time.strftime('%Y-%m-%d', time.gmtime())}"}
    # The logged outputs are what the client got.
    import onnxruntime as ort

    session = ort.InferenceSession(str(tumor.onnx), providers=["CPUExecutionProvider"])
    x = np.column_stack([table.column(c).to_numpy() for c in columns]).astype(np.float32)
    probs = np.array(table.column("output.probabilities").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(session.run(["probabilities"], {"input": x})[0], probs)


@pytest.mark.slow
def test_an_s3_registry_serves_like_a_folder(
    example_models: dict[str, ExampleModel], s3_server: Any, tmp_path: Path
) -> None:
    import tritonclient.http as triton

    uri = s3_server.fresh_uri()
    tumor = example_models[TUMOR]
    publish(
        uri,
        TUMOR,
        tumor.onnx.read_bytes(),
        with_sample_rate(tumor.manifest.read_text(encoding="utf-8"), 1.0),
    )
    server = ServeProcess(uri, "--poll", "0.2", env=s3_server.env())
    client = triton.InferenceServerClient(server.hostport)
    try:
        x = np.ones((2, 30), dtype=np.float32)
        t = triton.InferInput("input", [2, 30], "FP32")
        t.set_data_from_numpy(x)
        assert client.infer(TUMOR, [t]).get_response()["model_version"] == "1"
        publish(uri, TUMOR, tumor.onnx.read_bytes(), tumor.manifest.read_text(), semver="1.1.0")
        t0 = time.perf_counter()
        while client.infer(TUMOR, [t]).get_response()["model_version"] != "2":
            assert time.perf_counter() - t0 < 2.0, "the deploy on S3 was not picked up in 2 s"
            time.sleep(0.05)
    finally:
        client.close()
        assert server.terminate() == 0, server.stderr()
    from mlops_ci.registry import open_registry

    keys = open_registry(uri).list_keys(f".mlops/predictions/{TUMOR}/")
    assert keys and all(k.endswith(".parquet") for k in keys)


def test_two_workers_share_the_port_and_both_flush_on_sigterm(
    example_models: dict[str, ExampleModel], tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    tumor = example_models[TUMOR]
    text = with_sample_rate(tumor.manifest.read_text(encoding="utf-8"), 1.0)
    publish(root, TUMOR, tumor.onnx.read_bytes(), text)
    server = ServeProcess(root, "--workers", "2")
    requests = 60
    for i in range(requests):  # a new connection each: the kernel spreads them over the workers
        conn = http.client.HTTPConnection(server.hostport, timeout=10)
        try:
            assert _post(conn, TUMOR, _tumor_body(1, request_id=f"w-{i}"))[0] == 200
        finally:
            conn.close()
    assert server.terminate() == 0, server.stderr()
    table = _parquet_rows(root / ".mlops" / "predictions" / TUMOR)
    assert table is not None
    assert sorted(table.column("request_id").to_pylist()) == sorted(
        f"w-{i}" for i in range(requests)
    )
