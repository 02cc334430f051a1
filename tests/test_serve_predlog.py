"""The prediction log under what a client controls: the text of BYTES inputs and the request id
land in it, of any length. Neither may make a flush cost more than the rows it writes, nor
change what it writes. `serve`'s own PredictionLog over a real filesystem registry."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from serve_registry import (
    EXAMPLES,
    ExampleModel,
    constant_onnx,
    publish,
    two_identities_onnx,
    with_sample_rate,
)
from uvicorn_thread import uvicorn_thread

from mlops_ci.registry import open_registry
from mlops_ci.serve.metrics import Metrics
from mlops_ci.serve.predlog import REGISTRY_PREFIX, Layout, PredictionLog
from mlops_ci.serve.protocol import TensorMeta

LAYOUT = Layout(inputs=(("sex", ("sex",)), ("age", ("age",))), outputs=("label",))


def _request(sex: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    n = len(sex)
    inputs = {
        "sex": np.array(sex, dtype=object).reshape(n, 1),
        "age": np.arange(n, dtype=np.float32).reshape(n, 1),
    }
    return inputs, {"label": np.zeros(n, dtype=np.int64)}


def _log(tmp_path: Path) -> tuple[PredictionLog, Metrics, Path]:
    root = tmp_path / "registry"
    root.mkdir()
    metrics = Metrics()
    log = PredictionLog(open_registry(root), REGISTRY_PREFIX, metrics, flush_s=3600)
    return log, metrics, root / REGISTRY_PREFIX / "m"


def test_one_long_bytes_value_costs_its_own_length_not_every_rows(tmp_path: Path) -> None:
    log, metrics, folder = _log(tmp_path)
    long = "x" * 20_000 + "\0"  # a trailing NUL, which numpy text drops
    log.record("m", 1, "a", LAYOUT, *_request([long]))
    log.record("m", 1, "b", LAYOUT, *_request(["female"] * 2_000))
    tracemalloc.start()
    try:
        log.close()  # the flush: as numpy text, 2,001 rows x 20,001 chars x 4 bytes = 160 MB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert metrics.log_rows == 2_001 and metrics.log_dropped == 0
    assert peak < 16 << 20, f"the flush peaked at {peak / 2**20:.0f} MB"
    table = ds.dataset(folder, partitioning="hive").to_table().sort_by("age")
    assert table.column("sex").to_pylist() == [long] + ["female"] * 2_000


def test_a_long_request_id_times_a_large_batch_is_dropped_not_buffered(tmp_path: Path) -> None:
    log, metrics, folder = _log(tmp_path)
    # 1 MB of id on each of 100 rows: 100 MB in the file, more at the flush. Counted, not kept.
    log.record("m", 1, "i" * (1 << 20), LAYOUT, *_request(["male"] * 100))
    assert metrics.log_dropped == 100
    log.record("m", 1, "req-2", LAYOUT, *_request(["female"] * 3))
    log.close()
    assert metrics.log_rows == 3 and metrics.log_dropped == 100
    table = ds.dataset(folder, partitioning="hive").to_table()
    assert table.column("request_id").to_pylist() == ["req-2"] * 3
    # A sample's own id stays on each of its rows.
    (tmp_path / "2").mkdir()
    log2, metrics2, folder2 = _log(tmp_path / "2")
    log2.record("m", 1, "r" * 1000, LAYOUT, *_request(["male"] * 50))
    log2.close()
    table = ds.dataset(folder2, partitioning="hive").to_table()
    assert table.column("request_id").to_pylist() == ["r" * 1000] * 50
    assert metrics2.log_rows == 50


def test_a_lone_surrogate_in_a_request_id_costs_no_other_requests_rows(
    example_models: dict[str, ExampleModel], tmp_path: Path
) -> None:
    # JSON's "\\ud800" escape reads as a lone surrogate, which UTF-8 (so Parquet) cannot hold.
    poison = "\ud800"
    naive_log, naive_metrics, _ = _log(tmp_path)
    naive_log.record("m", 1, "good", LAYOUT, *_request(["female"]))
    naive_log.record("m", 1, poison, LAYOUT, *_request(["male"]))
    naive_log.close()  # the naive way: the one bad id loses the whole flush
    assert naive_metrics.log_rows == 0 and naive_metrics.log_dropped == 2

    from mlops_ci.serve.app import App, Settings

    tumor = example_models["tumor-classifier"]
    root, log = tmp_path / "served", tmp_path / "predictions"
    manifest = with_sample_rate(tumor.manifest.read_text(encoding="utf-8"), 1.0)
    publish(root, tumor.name, tumor.onnx.read_bytes(), manifest)
    app = App(Settings(registry=str(root), prediction_log=str(log)))
    statuses = []
    with uvicorn_thread(app, http="httptools", loop="asyncio", log_level="warning") as hostport:
        for rid in ("before", poison, "after"):
            doc = {"id": rid, "inputs": [
                {"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [1.0] * 30}
            ]}  # fmt: skip
            conn = http.client.HTTPConnection(hostport, timeout=10)
            conn.request("POST", f"/v2/models/{tumor.name}/infer", body=json.dumps(doc))
            resp = conn.getresponse()
            statuses.append((resp.status, json.loads(resp.read()).get("error")))
            conn.close()
    assert statuses[0] == (200, None) and statuses[2] == (200, None)
    assert statuses[1] == (400, "'id' must be a string of Unicode text")
    table = ds.dataset(log / tumor.name, partitioning="hive").to_table()
    assert sorted(table.column("request_id").to_pylist()) == ["after", "before"]
    assert app.metrics.log_dropped == 0


def test_one_requests_shape_costs_no_other_requests_rows(tmp_path: Path) -> None:
    from mlops_ci.serve.app import App, Settings

    root, log = tmp_path / "registry", tmp_path / "predictions"
    manifest = (EXAMPLES / "models" / "tumor-classifier" / "model.yaml").read_text("utf-8")
    publish(root, "identities", two_identities_onnx(), with_sample_rate(manifest, 1.0))
    app = App(Settings(registry=str(root), prediction_log=str(log)))
    with uvicorn_thread(app, http="httptools", loop="asyncio", log_level="warning") as hostport:
        # x 3 wide, x 5 wide (another file), then z of 3 rows beside x of 2 (no table of rows).
        for width, z_rows in ((3, 2), (5, 2), (3, 3)):
            doc = {"inputs": [
                {"name": "x", "shape": [2, width], "datatype": "FP32", "data": [1.0] * 2 * width},
                {"name": "z", "shape": [z_rows], "datatype": "FP32", "data": [2.0] * z_rows},
            ]}  # fmt: skip
            conn = http.client.HTTPConnection(hostport, timeout=10)
            conn.request("POST", "/v2/models/identities/infer", body=json.dumps(doc))
            assert conn.getresponse().status == 200
            conn.close()
    # The naive way, the three went into one file, which failed: all 6 rows dropped.
    assert (app.metrics.log_rows, app.metrics.log_dropped) == (4, 2)
    widths = sorted(
        len(row["x"])
        for path in (log / "identities").rglob("*.parquet")
        for row in ds.dataset(path).to_table().to_pylist()
    )
    assert widths == [3, 3, 5, 5]


def test_a_model_without_inputs_is_served_and_logged(tmp_path: Path) -> None:
    from mlops_ci.serve.app import App, Settings

    root, log = tmp_path / "registry", tmp_path / "predictions"
    manifest = (EXAMPLES / "models" / "tumor-classifier" / "model.yaml").read_text("utf-8")
    publish(root, "constant", constant_onnx(), with_sample_rate(manifest, 1.0))
    app = App(Settings(registry=str(root), prediction_log=str(log)))
    with uvicorn_thread(app, http="httptools", loop="asyncio", log_level="critical") as hostport:
        conn = http.client.HTTPConnection(hostport, timeout=10)
        conn.request("POST", "/v2/models/constant/infer", body=b'{"id": "c-1", "inputs": []}')
        resp = conn.getresponse()
        reply = json.loads(resp.read())
        conn.close()
    assert resp.status == 200, reply  # was a 500: StopIteration inside the sampled request
    assert reply["outputs"][0]["data"] == [1.0, 2.0]
    rows = ds.dataset(log / "constant", partitioning="hive").to_table().to_pylist()
    assert [(r["request_id"], r["output.y"]) for r in rows] == [("c-1", [1.0, 2.0])]


def test_a_feature_named_like_a_log_column_is_not_logged_over_it(
    example_models: dict[str, ExampleModel], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import io

    import pyarrow.parquet as pq
    import yaml

    from mlops_ci.serve import predlog
    from mlops_ci.serve.models import ModelStore

    tumor = example_models["tumor-classifier"]
    doc = yaml.safe_load(with_sample_rate(tumor.manifest.read_text(encoding="utf-8"), 1.0))
    (signature,) = doc["spec"]["signature"]["inputs"]
    signature["columns"][:2] = ["time", "date"]  # plausible feature names
    layout = predlog.layout_for(doc, [TensorMeta("input", "FP32", (-1, 30))], [])
    # The naive way: the feature's values took the place of the log's timestamps.
    inputs = {"input": np.ones((1, 30), dtype=np.float32)}
    entry = predlog._Entry(dt.datetime.now(dt.UTC), "m", 1, "r", layout, inputs, {}, 1, ((30,),))
    written = pq.read_table(io.BytesIO(predlog._parquet([entry])))
    assert written.schema.field("time").type == pa.float32()

    root = tmp_path / "registry"
    publish(root, tumor.name, tumor.onnx.read_bytes(), yaml.safe_dump(doc, sort_keys=False))
    store = ModelStore(open_registry(root), Metrics())
    with caplog.at_level(logging.ERROR, logger="mlops_ci.serve"):
        store.refresh(full=True)
    model = store.get(tumor.name)
    assert model.sampler is None  # served, and not logged rather than logged wrong
    assert "input column 'date', 'time' would take the name" in caplog.text
    # The example's own names are logged as ever.
    assert predlog.layout_for(tumor.document, model.inputs, model.outputs).problem is None


def test_a_manifest_without_columns_logs_the_columns_convert_recorded(
    example_models: dict[str, ExampleModel], tmp_path: Path
) -> None:
    """docs/saving-models.md: a single [-1, N] input needs no `columns:` (convert takes the
    DataFrame's names and records them in the ONNX model). The log wrote one `input` column
    of lists, and `monitor` then found none of the reference's columns in it."""
    import yaml

    from mlops_ci.serve.models import ModelStore

    tumor = example_models["tumor-classifier"]
    doc = yaml.safe_load(with_sample_rate(tumor.manifest.read_text(encoding="utf-8"), 1.0))
    (signature,) = doc["spec"]["signature"]["inputs"]
    names = tuple(signature.pop("columns"))
    root = tmp_path / "registry"
    publish(root, tumor.name, tumor.onnx.read_bytes(), yaml.safe_dump(doc, sort_keys=False))
    store = ModelStore(open_registry(root), Metrics())
    store.refresh(full=True)
    model = store.get(tumor.name)
    assert model.layout.inputs == (("input", names),)
    assert model.layout.problem is None and model.sampler is not None


def test_rows_of_any_length_are_bounded_by_their_bytes(tmp_path: Path) -> None:
    metrics = Metrics()
    folder = tmp_path / "log"
    bound = 16 << 20  # the default is 256 MB
    log = PredictionLog(open_registry(folder), "", metrics, flush_s=3600, max_tensor_bytes=bound)
    layout = Layout(inputs=(("x", None), ("w", None)), outputs=())
    # One row of 1 MB, as a model with a dynamic axis past the batch takes it: the same array
    # each time here. Bounded only by rows, 200,000 such rows (200 GB) were held till the flush.
    wide = {"x": np.zeros((1, 1 << 18), dtype=np.float32), "w": np.array([["w"]], dtype=object)}
    for _ in range(100):
        log.record("m", 1, "wide", layout, wide, {})
    # BYTES values count by their length: 1 MB of text in one value.
    text = {"x": np.zeros((1, 1), dtype=np.float32), "w": np.array([["t" * (1 << 20)]], object)}
    log.record("m", 1, "text", layout, text, {})
    kept = bound // (1 << 20) - 1  # each is a few bytes over 1 MB
    assert metrics.log_dropped == 101 - kept
    log.close()
    assert metrics.log_rows == kept
    assert ds.dataset(folder / "m", partitioning="hive").count_rows() == kept
