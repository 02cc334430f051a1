"""A request the prediction log samples runs the model once: the one run computes every output
the log holds, and the reply carries only the outputs the request named. The server runs in this
process (uvicorn in a thread) so that onnxruntime's `run` can be counted."""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_registry import ExampleModel, publish, with_sample_rate
from uvicorn_thread import uvicorn_thread

TUMOR = "tumor-classifier"


@pytest.fixture
def tumor(example_models: dict[str, ExampleModel]) -> ExampleModel:
    return example_models[TUMOR]  # converted (and parity-checked) before any counting starts


@pytest.fixture
def session_runs(tumor: ExampleModel, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The output names of every `InferenceSession.run` made from now on, in order."""
    import onnxruntime as ort

    runs: list[list[str]] = []

    class CountingSession(ort.InferenceSession):  # type: ignore[misc]
        def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
            runs.append(list(output_names or ()))
            return super().run(output_names, input_feed, run_options)

    # serve/models.py looks the class up on the module when it loads a version.
    monkeypatch.setattr(ort, "InferenceSession", CountingSession)
    return runs


@contextlib.contextmanager
def _serving(registry: Path, log: Path) -> Iterator[str]:
    """`serve`'s ASGI app under uvicorn in a thread; on the way out the lifespan's shutdown
    flushes the prediction log, as SIGTERM does."""
    from mlops_ci.serve.app import App, Settings

    app = App(Settings(registry=str(registry), prediction_log=str(log)))
    with uvicorn_thread(app, http="httptools", loop="asyncio", log_level="warning") as hostport:
        yield hostport


def _infer(hostport: str, path: str, x: np.ndarray, outputs: list[str]) -> dict[str, Any]:
    doc = {
        "id": "req-1",
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ],
        "outputs": [{"name": n} for n in outputs],
    }
    conn = http.client.HTTPConnection(hostport, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(doc).encode())
        resp = conn.getresponse()
        reply: dict[str, Any] = json.loads(resp.read())
        assert resp.status == 200, reply
        return reply
    finally:
        conn.close()


def test_a_sampled_request_for_some_outputs_runs_the_model_once_and_logs_them_all(
    tumor: ExampleModel, tmp_path: Path, session_runs: list[list[str]]
) -> None:
    import onnxruntime as ort
    import pyarrow.parquet as pq

    manifest = tumor.manifest.read_text(encoding="utf-8")
    root, log = tmp_path / "registry", tmp_path / "predictions"
    # Version 1 is never sampled, version 2 (which serves) always is.
    publish(root, TUMOR, tumor.onnx.read_bytes(), with_sample_rate(manifest, 0.0), semver="1.0.0")
    publish(root, TUMOR, tumor.onnx.read_bytes(), with_sample_rate(manifest, 1.0), semver="2.0.0")
    x = np.random.default_rng(7).uniform(0, 30, size=(3, 30)).astype(np.float32)
    reference = ort.InferenceSession(str(tumor.onnx), providers=["CPUExecutionProvider"])
    want_label, want_probs = reference.run(["label", "probabilities"], {"input": x})
    session_runs.clear()  # the reference session above counts too

    with _serving(root, log) as hostport:
        sampled = _infer(hostport, f"/v2/models/{TUMOR}/infer", x, ["label"])
        unsampled = _infer(hostport, f"/v2/models/{TUMOR}/versions/1/infer", x, ["label"])

    # One run per request: the sampled one computed every output at once, the other only
    # what was asked for.
    assert session_runs == [["label", "probabilities"], ["label"]]
    for reply, version in ((sampled, "2"), (unsampled, "1")):
        assert reply["model_version"] == version
        assert [o["name"] for o in reply["outputs"]] == ["label"]
        assert reply["outputs"][0]["data"] == want_label.ravel().tolist()

    files = sorted((log / TUMOR).rglob("*.parquet"))
    assert len(files) == 1, files
    table = pq.read_table(files[0])
    assert table.num_rows == 3
    assert set(table.column("model_version").to_pylist()) == {2}
    assert table.column("output.label").to_pylist() == want_label.tolist()
    logged = np.array(table.column("output.probabilities").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(logged, want_probs)
