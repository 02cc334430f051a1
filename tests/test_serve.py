"""`mlops-ci serve` end to end: a real server process over a registry of the example models,
called by Triton's own client and by raw HTTP; replies checked against onnxruntime and against
the Open Inference Protocol's OpenAPI file."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from serve_registry import EXAMPLES, ExampleModel, ServeProcess, publish, two_identities_onnx
from uvicorn_thread import uvicorn_thread

OIP = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "oip" / "open_inference_rest.yaml"
)
MODELS = ["diabetes-risk", "digit-recognizer", "disease-progression", "tumor-classifier"]
BODY_LIMIT_MB = 1
IDLE_TIMEOUT_S = 1


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(
    example_models: dict[str, ExampleModel], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp("serve") / "registry"
    for name in MODELS:
        m = example_models[name]
        publish(root, name, m.onnx.read_bytes(), m.manifest.read_text(encoding="utf-8"))
    return root


@pytest.fixture(scope="module")
def server(registry: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(
        registry,
        "--max-body-mb",
        str(BODY_LIMIT_MB),
        "--prediction-log",
        "off",
        "--idle-timeout",
        str(IDLE_TIMEOUT_S),
    )
    try:
        yield proc
    finally:
        assert proc.terminate() == 0, proc.stderr()


@pytest.fixture(scope="module")
def naive_server() -> Iterator[str]:
    """Plain uvicorn (httptools, same idle timeout) with an app that reads any body and says
    200: what the defences below are measured against."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with uvicorn_thread(
        app,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        log_level="critical",
        timeout_keep_alive=IDLE_TIMEOUT_S,
    ) as hostport:
        yield hostport


@pytest.fixture(scope="module")
def oip_validator() -> Any:
    """Validates a reply against one of the OpenAPI file's component schemas."""
    if not OIP.is_file():
        pytest.fail(f"{OIP} is missing: the Open Inference Protocol's OpenAPI file (../shared)")
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    doc = yaml.safe_load(OIP.read_text(encoding="utf-8"))
    refs = Registry().with_resource("urn:oip", Resource(doc, specification=DRAFT4))

    def validate(reply: Any, component: str) -> None:
        schema = {"$ref": f"urn:oip#/components/schemas/{component}"}
        jsonschema.Draft4Validator(schema, registry=refs).validate(reply)

    return validate


def _inputs(model: ExampleModel) -> dict[str, np.ndarray]:
    """Every test case of the manifest as one batch, one array per signature input."""
    doc = model.document
    cases = doc["spec"]["tests"]["cases"]
    arrays = {}
    for spec in doc["spec"]["signature"]["inputs"]:
        columns = spec.get("columns") or [spec["name"]]
        rows = [[case["input"][c] for c in columns] for case in cases]
        dtype = object if spec["dtype"] == "string" else np.dtype(spec["dtype"])
        arrays[spec["name"]] = np.array(rows, dtype=dtype)
    return arrays


def _reference(model: ExampleModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def _datatype(array: np.ndarray) -> str:
    return (
        "BYTES"
        if array.dtype == object
        else {"float32": "FP32", "int64": "INT64"}[str(array.dtype)]
    )


def _request(
    server: ServeProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.hostport, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# --- Triton's client ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_sync_answers_equal_onnxruntime_in_all_four_encodings(
    server: ServeProcess, example_models: dict[str, ExampleModel], oip_validator: Any, name: str
) -> None:
    import tritonclient.http as triton

    model = example_models[name]
    inputs = _inputs(model)
    expected = _reference(model, inputs)
    client = triton.InferenceServerClient(server.hostport)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
        for binary_in in (False, True):
            for binary_out in (False, True):
                tensors = []
                for input_name, array in inputs.items():
                    t = triton.InferInput(input_name, list(array.shape), _datatype(array))
                    t.set_data_from_numpy(array, binary_data=binary_in)
                    tensors.append(t)
                wanted = [triton.InferRequestedOutput(o, binary_data=binary_out) for o in expected]
                result = client.infer(name, tensors, outputs=wanted, request_id=f"{name}-x")
                reply = result.get_response()
                assert reply["id"] == f"{name}-x"
                assert reply["model_name"] == name and reply["model_version"] == "1"
                if not binary_out:
                    oip_validator(reply, "inference_response")
                for output_name, want in expected.items():
                    got = result.as_numpy(output_name)
                    assert got.dtype == want.dtype, output_name
                    np.testing.assert_array_equal(
                        got, want, err_msg=f"{output_name} {binary_in=} {binary_out=}"
                    )
        # No outputs named: tritonclient asks for all of them, binary.
        result = client.infer(name, tensors)
        for output_name, want in expected.items():
            np.testing.assert_array_equal(result.as_numpy(output_name), want)
    finally:
        client.close()


def test_tritonclient_compressing_its_request_is_told_415(server: ServeProcess) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    x = np.ones((2, 10), dtype=np.float32)
    client = triton.InferenceServerClient(server.hostport)
    try:
        for binary in (False, True):
            tensor = triton.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            for algorithm in ("gzip", "deflate"):
                with pytest.raises(InferenceServerException) as err:
                    client.infer(
                        "disease-progression", [tensor], request_compression_algorithm=algorithm
                    )
                assert err.value.status() == "415", err.value
                assert f"Content-Encoding '{algorithm}' is not supported" in err.value.message()
            plain = client.infer("disease-progression", [tensor])
            assert plain.as_numpy("variable").shape == (2, 1)
    finally:
        client.close()


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_async_answers_equal_onnxruntime_in_all_four_encodings(
    server: ServeProcess, example_models: dict[str, ExampleModel], name: str
) -> None:
    import tritonclient.http.aio as triton_aio
    from tritonclient.http import InferInput, InferRequestedOutput

    model = example_models[name]
    inputs = _inputs(model)
    expected = _reference(model, inputs)

    async def run() -> None:
        client = triton_aio.InferenceServerClient(server.hostport)
        try:
            assert await client.is_model_ready(name)
            meta = await client.get_model_metadata(name)
            assert meta["platform"] == "onnxruntime_onnx"
            calls = []
            for binary_in in (False, True):
                for binary_out in (False, True):
                    tensors = []
                    for input_name, array in inputs.items():
                        t = InferInput(input_name, list(array.shape), _datatype(array))
                        t.set_data_from_numpy(array, binary_data=binary_in)
                        tensors.append(t)
                    wanted = [InferRequestedOutput(o, binary_data=binary_out) for o in expected]
                    calls.append(client.infer(name, tensors, outputs=wanted))
            # All four at once, on one event loop: concurrent requests must not mix.
            for result in await asyncio.gather(*calls):
                for output_name, want in expected.items():
                    np.testing.assert_array_equal(result.as_numpy(output_name), want)
        finally:
            await client.close()

    asyncio.run(run())


def test_bytes_inputs_carry_unicode_and_unseen_categories(
    server: ServeProcess, example_models: dict[str, ExampleModel]
) -> None:
    import tritonclient.http as triton

    model = example_models["diabetes-risk"]
    inputs = _inputs(model)
    inputs["bmi_band"] = np.array([["obèse ✓"], ["normal"], [""]], dtype=object)
    expected = _reference(model, inputs)
    client = triton.InferenceServerClient(server.hostport)
    try:
        for binary in (False, True):
            tensors = []
            for input_name, array in inputs.items():
                t = triton.InferInput(input_name, list(array.shape), _datatype(array))
                t.set_data_from_numpy(array, binary_data=binary)
                tensors.append(t)
            result = client.infer("diabetes-risk", tensors)
            np.testing.assert_array_equal(
                result.as_numpy("probabilities"), expected["probabilities"]
            )
    finally:
        client.close()


# --- metadata and health, against the OpenAPI file ----------------------------------------------


def test_server_and_model_metadata_follow_the_openapi_file(
    server: ServeProcess, oip_validator: Any
) -> None:
    for path in ("/v2", "/v2/"):
        status, _, body = _request(server, "GET", path)
        assert status == 200
        doc = json.loads(body)
        oip_validator(doc, "metadata_server_response")
        assert "binary_tensor_data" in doc["extensions"]
    for path in ("/v2/models/tumor-classifier", "/v2/models/tumor-classifier/versions/1"):
        status, _, body = _request(server, "GET", path)
        assert status == 200
        doc = json.loads(body)
        oip_validator(doc, "metadata_model_response")
        assert doc == {
            "name": "tumor-classifier",
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            ],
        }
    status, _, body = _request(server, "GET", "/v2/models/diabetes-risk")
    sex = next(t for t in json.loads(body)["inputs"] if t["name"] == "sex")
    assert sex == {"name": "sex", "datatype": "BYTES", "shape": [-1, 1]}
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/tumor-classifier/ready",
        "/v2/models/tumor-classifier/versions/1/ready",
    ):
        assert _request(server, "GET", path)[0] == 200, path


def test_metrics_use_tritons_names_and_count_requests(server: ServeProcess) -> None:
    def scrape() -> dict[str, float]:
        status, headers, body = _request(server, "GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        values = {}
        for line in body.decode().splitlines():
            if 'model="disease-progression"' in line:
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
        return values

    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [3, 10], "datatype": "FP32", "data": [0.5] * 30}]}
    ).encode()
    before = scrape()
    for _ in range(4):
        assert _request(server, "POST", "/v2/models/disease-progression/infer", body)[0] == 200
    assert _request(server, "POST", "/v2/models/disease-progression/infer", b"{")[0] == 400
    after = scrape()
    labels = '{model="disease-progression",version="1"}'

    def delta(name: str) -> float:
        return after[name + labels] - before.get(name + labels, 0.0)

    assert delta("nv_inference_request_success") == 4
    assert delta("nv_inference_request_failure") == 1
    assert delta("nv_inference_count") == 12  # 4 requests of 3 rows
    assert delta("nv_inference_request_duration_us") > 0
    assert delta("mlops_ci_inference_request_duration_seconds_count") == 4
    text = _request(server, "GET", "/metrics")[2].decode()
    # Exactly Triton's names: no `_total` that prometheus_client would add to a counter.
    assert "# TYPE nv_inference_request_success counter" in text
    assert "nv_inference_request_success_total" not in text


# --- hostile requests ---------------------------------------------------------------------------


def _binary_body(
    size: int, payload: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 10],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    length = len(header) if header_length is None else header_length
    return header + payload, {"Inference-Header-Content-Length": str(length)}


def _json_body(**tensor: Any) -> bytes:
    base = {"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [1.0] * 10}
    return json.dumps({"inputs": [{**base, **tensor}]}).encode()


HOSTILE = {
    "wrong shape": (_json_body(shape=[1, 11], data=[1.0] * 11), {}, 400),
    "wrong datatype": (_json_body(datatype="INT64", data=[1] * 10), {}, 400),
    "missing input": (json.dumps({"inputs": []}).encode(), {}, 400),
    "invalid json": (b'{"inputs": [', {}, 400),
    "not utf-8": (b"\xff\xfe{}", {}, 400),
    "header length past the body": (*_binary_body(40, b"\0" * 40, header_length=10_000), 400),
    "header length not a number": (_json_body(), {"Inference-Header-Content-Length": "x"}, 400),
    "negative binary_data_size": (*_binary_body(-40, b"\0" * 40), 400),
    "truncated binary part": (*_binary_body(40, b"\0" * 20), 400),
    "nested too deep": (b"[" * 100_000 + b"]" * 100_000, {}, 400),
    "huge declared shape": (_json_body(shape=[1 << 40, 10]), {}, 400),
    # Read as it is, a compressed body was refused for a wrong length or as invalid JSON.
    "compressed body": (gzip.compress(_json_body()), {"Content-Encoding": "gzip"}, 415),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_request_gets_a_clean_error(
    server: ServeProcess, oip_validator: Any, case: str
) -> None:
    body, headers, status = HOSTILE[case]
    got, reply_headers, reply = _request(
        server, "POST", "/v2/models/disease-progression/infer", body, headers
    )
    assert got == status, reply
    doc = json.loads(reply)
    # Refused by the protocol's checks, before onnxruntime was asked.
    assert not doc["error"].startswith("inference failed"), doc
    oip_validator(doc, "inference_error_response")
    assert set(doc) == {"error"} and doc["error"]
    assert reply_headers["content-type"] == "application/json"


def test_unknown_model_or_version_is_404(server: ServeProcess, oip_validator: Any) -> None:
    body = _json_body()
    for path in (
        "/v2/models/nope/infer",
        "/v2/models/disease-progression/versions/9/infer",
        "/v2/models/disease-progression/versions/x/infer",
        # Digits to str.isdigit() but not versions: "²" made int() raise (a 500), "١" aliased 1.
        "/v2/models/disease-progression/versions/%C2%B2/infer",
        "/v2/models/disease-progression/versions/%C2%B2",
        "/v2/models/disease-progression/versions/%D9%A1/infer",
        "/v2/models/disease-progression/versions/%D9%A1/ready",
        "/v2/models/nope",
        "/v2/models/disease-progression/versions/2",
        "/v2/models/nope/ready",
        "/v2/nothing",
        "/v2/models/disease-progression/versions/1/infer/more",
    ):
        status, _, reply = _request(server, "POST" if path.endswith("infer") else "GET", path, body)
        assert status == 404, path
        schema = "inference_error_response" if "infer" in path else "metadata_model_error_response"
        oip_validator(json.loads(reply), schema)


def test_a_wrong_method_is_405_with_allow_on_what_exists_and_404_elsewhere(
    server: ServeProcess,
) -> None:
    for method, path, allow in (
        ("POST", "/v2/health/ready", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("PUT", "/v2/models/disease-progression", "GET, HEAD"),
        ("POST", "/v2/models/disease-progression/versions/1/ready", "GET, HEAD"),
        ("GET", "/v2/models/disease-progression/infer", "POST"),
        ("HEAD", "/v2/models/disease-progression/versions/1/infer", "POST"),
    ):
        status, headers, _ = _request(server, method, path)
        assert (status, headers.get("allow")) == (405, allow), (method, path)
    # A 405 says the resource exists: tritonclient's get_model_repository_index (a POST to an
    # extension this server lacks) was told 405, as was any method on an unknown model.
    for method, path in (
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/nothing"),
        ("PUT", "/v2/models/nope"),
        ("GET", "/v2/models/nope/infer"),
        ("POST", "/v2/models/disease-progression/versions/9/ready"),
    ):
        status, headers, reply = _request(server, method, path)
        assert (status, "allow" in headers) == (404, False), (method, path, reply)
        assert set(json.loads(reply)) == {"error"}


def test_body_over_the_limit_is_413_declared_or_streamed(
    server: ServeProcess, naive_server: str
) -> None:
    big = b"[" + b"1," * (BODY_LIMIT_MB << 20) + b"1]"
    # The naive way, the whole body is read into memory whatever its size.
    conn = http.client.HTTPConnection(naive_server, timeout=10)
    conn.request("POST", "/v2/models/x/infer", body=big)
    assert conn.getresponse().status == 200
    conn.close()
    status, _, reply = _request(server, "POST", "/v2/models/disease-progression/infer", big)
    assert status == 413 and "limit" in json.loads(reply)["error"]
    # Chunked, so no Content-Length warns the server: it must stop reading at the limit.
    conn = http.client.HTTPConnection(server.hostport, timeout=10)
    try:
        chunks = iter([big[i : i + 65536] for i in range(0, len(big), 65536)])
        conn.request(
            "POST", "/v2/models/disease-progression/infer", body=chunks, encode_chunked=True
        )
        resp = conn.getresponse()
        assert resp.status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close the connection before the client has sent it all
    finally:
        conn.close()


def _raw_request(server: ServeProcess | str, payload: bytes) -> bytes:
    host, port = (server if isinstance(server, str) else server.hostport).split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_malformed_http_and_huge_headers_get_400_and_a_closed_connection(
    server: ServeProcess, naive_server: str
) -> None:
    huge_header = (
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200_000 + b"\r\n\r\n"
    )
    # The naive way, uvicorn buffers headers of any size and answers.
    assert _raw_request(
        naive_server, huge_header + b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
    ).startswith(b"HTTP/1.1 200")
    for payload in (
        b"GARBAGE\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200_000 + b"\r\n\r\n",
        # A URL httptools itself accepts (under 64 KiB) that, with a header, passes our cap.
        b"GET /v2/health/live?"
        + b"a" * 60_000
        + b" HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + b"a" * 10_000
        + b"\r\n\r\n",
    ):
        reply = _raw_request(server, payload)
        assert reply.startswith(b"HTTP/1.1 400"), reply[:100]
        head, _, body = reply.partition(b"\r\n\r\n")
        # The protocol's error object, as every other error (uvicorn's was text/plain).
        assert b"content-type: application/json" in head.lower(), head
        error = json.loads(body)["error"]
        assert ("over 65536 bytes" in error) == (payload != b"GARBAGE\r\n\r\n"), error
    assert _request(server, "GET", "/v2/health/live")[0] == 200


def test_an_upgrade_to_http2_is_ignored_and_the_request_keeps_its_body(
    server: ServeProcess,
) -> None:
    # What `curl --http2 http://…` sends. llhttp stops at the headers of an upgrade: the app
    # got the request without its body (400, "not valid JSON"), and the body became the next
    # request. Ignored instead (RFC 9110 §7.8), as any server without h2c does.
    doc = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [1.0] * 10}]}
    body = json.dumps(doc).encode()
    head = (
        b"POST /v2/models/disease-progression/infer HTTP/1.1\r\nHost: x\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQ\r\n"
    )
    then = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for framing, payload in (
        (b"Content-Length: %d\r\n\r\n" % len(body), body),
        (b"Transfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)),
    ):
        reply = _raw_request(server, head + framing + payload + then)
        first, _, rest = reply.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200"), reply[:300]
        assert b'"model_name":"disease-progression"' in rest, reply[:300]
        assert rest.count(b"HTTP/1.1 200") == 1, reply  # the request behind it answered too
    # CONNECT is an upgrade to llhttp as well: still refused, not parsed again for ever.
    for extra in (b"", b"Connection: upgrade\r\nUpgrade: h2c\r\n"):
        connect = b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n" + extra + b"\r\n"
        assert _raw_request(server, connect).startswith(b"HTTP/1.1 400")
    assert "RecursionError" not in server.stderr()


def test_stalled_requests_are_cut_off(server: ServeProcess, naive_server: str) -> None:
    path = b"/v2/models/disease-progression/infer"
    half_headers = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
    half_body = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    no_body = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"

    def connect(hostport: str) -> socket.socket:
        host, port = hostport.split(":")
        return socket.create_connection((host, int(port)), timeout=10)

    naive = [connect(naive_server) for _ in range(3)]
    ours = [connect(server.hostport) for _ in range(4)]
    try:
        naive[1].sendall(half_headers)
        naive[2].sendall(no_body)
        ours[1].sendall(half_headers)
        ours[2].sendall(half_body)
        # Whole headers, then not one byte of the body: the transport's timer has stopped.
        ours[3].sendall(no_body)
        time.sleep(IDLE_TIMEOUT_S + 0.5)
        # The naive way, a connection that sends nothing, or half a request, stays open.
        for sock in naive:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(100)
        # Ours closes both; a stalled body gets 408 once it has been silent for 2x the timeout.
        assert ours[0].recv(100) == b""
        assert ours[1].recv(100) == b""
        for sock in ours[2:]:
            reply = sock.recv(1000)
            assert reply.startswith(b"HTTP/1.1 408"), reply
    finally:
        for sock in naive + ours:
            sock.close()


def test_a_thousand_idle_connections_neither_block_nor_leak(server: ServeProcess) -> None:
    body = _json_body()
    path = "/v2/models/disease-progression/infer"
    for _ in range(200):  # warm up: allocator and caches settle before the first reading
        _request(server, "POST", path, body)
    rss_before = server.rss_kb()
    host, port = server.hostport.split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(1000)]
    try:
        # Half of them send half a request and stall.
        for sock in idle[::2]:
            sock.sendall(
                b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"
            )
        t0 = time.perf_counter()
        status, _, reply = _request(server, "POST", path, body)
        assert status == 200, reply
        assert time.perf_counter() - t0 < 2
        for name, (payload, headers, want) in HOSTILE.items():
            assert _request(server, "POST", path, payload, headers)[0] == want, name
    finally:
        for sock in idle:
            sock.close()
    for _ in range(3):  # and the same hostile mix many times over
        for payload, headers, want in HOSTILE.values():
            assert _request(server, "POST", path, payload, headers)[0] == want
    time.sleep(0.5)
    assert server.proc.poll() is None
    assert _request(server, "POST", path, body)[0] == 200
    grown_mb = (server.rss_kb() - rss_before) / 1024
    assert grown_mb < 25, f"RSS grew by {grown_mb:.1f} MB"


def test_request_id_and_requested_outputs_over_raw_binary(server: ServeProcess) -> None:
    x = np.linspace(0, 1, 30, dtype=np.float32).reshape(1, 30)
    header = json.dumps(
        {
            "id": "raw-1",
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 30],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, reply = _request(
        server,
        "POST",
        "/v2/models/tumor-classifier/infer",
        header + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200
    n = int(headers["inference-header-content-length"])
    head = json.loads(reply[:n])
    assert head["id"] == "raw-1"
    assert [o["name"] for o in head["outputs"]] == ["probabilities"]
    probs = np.frombuffer(reply[n:], dtype="<f4")
    assert probs.shape == (2,) and abs(float(probs.sum()) - 1) < 1e-5
    assert struct.calcsize("<f") * 2 == head["outputs"][0]["parameters"]["binary_data_size"]


def test_run_prints_a_serve_command_and_a_curl_call_that_works(
    server: ServeProcess, registry: Path
) -> None:
    import shlex

    from mlops_ci.serve.hint import run_hint

    text = run_hint(registry)
    assert f"mlops-ci serve --registry {registry} --port 8000" in text
    curl = shlex.split(next(line for line in text.splitlines() if "curl" in line))
    url, body = curl[curl.index("-s") + 1], curl[curl.index("-d") + 1]
    path = url.split(":8000", 1)[1]
    status, _, reply = _request(server, "POST", path, body.encode())
    assert status == 200, reply
    # The shortest call of the registry's models: disease-progression's 10 features.
    assert json.loads(reply)["model_name"] == "disease-progression"


def test_run_does_not_offer_to_serve_a_registry_with_nothing_deployed(tmp_path: Path) -> None:
    """`run --stages validate,convert` deploys nothing: a serve command and a curl call of a
    model that is not there would answer 404."""
    from mlops_ci.serve.hint import run_hint

    for registry in (tmp_path / "never-created", tmp_path):
        text = run_hint(registry)
        assert "Nothing is deployed to" in text and "mlops-ci serve" not in text
        assert "curl" not in text


def test_configuration_errors_are_one_line_and_exit_2(tmp_path: Path, server: ServeProcess) -> None:
    import subprocess
    import sys

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlops_ci", "serve", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    port = server.hostport.split(":")[1]
    for args, message in (
        (["--registry", str(tmp_path / "nope")], "no such registry folder"),
        (["--registry", str(tmp_path), "--port", "70000"], "--port must be"),
        (["--registry", str(tmp_path), "--version-cache", "-1"], "--version-cache must be"),
        (["--registry", str(tmp_path), "--port", port], "cannot listen on 127.0.0.1:" + port),
        (["--registry", "ftp://x/y"], "a registry is a folder"),
        (["--registry", str(tmp_path), "--prediction-log", "ftp://x/y"], "--prediction-log"),
        # The log's folders beside the models: Triton would read them as models.
        (["--registry", str(tmp_path), "--prediction-log", str(tmp_path)], "inside the registry"),
        (["--registry", str(tmp_path), "--prediction-log", f"file://{tmp_path}/logs"], "inside"),
    ):
        done = serve(*args)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) <= 2  # argparse adds its usage line


def test_an_empty_registry_is_served_and_said_to_be_empty(tmp_path: Path) -> None:
    """Pointing serve at the wrong folder (the model repository, say) must not look like a
    working server: it says it holds no model, and still picks up a deploy later."""
    (tmp_path / "registry").mkdir()
    proc = ServeProcess(tmp_path / "registry")
    try:
        stdout = proc.proc.stdout
        assert stdout is not None
        said: list[str] = []  # readline in a thread: a server that says nothing must not hang us
        reader = threading.Thread(target=lambda: said.append(stdout.readline().decode()))
        reader.start()
        reader.join(30)
        note = said[0] if said else "(nothing said)"
        assert "no model in file://" in note and "picked up" in note, note
    finally:
        proc.terminate()


def test_the_url_printed_for_an_ipv6_address_works(tmp_path: Path) -> None:
    import urllib.request

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    (tmp_path / "registry").mkdir()
    # ServeProcess reads the URL serve prints and polls it: "http://::1:port" is no URL.
    proc = ServeProcess(tmp_path / "registry", "--host", "::1")
    try:
        assert proc.url.startswith("http://[::1]:"), proc.url
        with urllib.request.urlopen(proc.url + "/v2/health/live", timeout=5) as reply:
            assert reply.status == 200
    finally:
        proc.terminate()


def test_an_unexpected_error_is_a_json_500_and_one_logged_traceback(
    registry: Path, oip_validator: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from mlops_ci.serve import app as app_module

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "_metadata", broken)
    app = app_module.App(app_module.Settings(registry=str(registry), prediction_log=""))
    with uvicorn_thread(app, http="httptools", loop="asyncio", log_level="critical") as hostport:
        conn = http.client.HTTPConnection(hostport, timeout=10)
        conn.request("GET", "/v2/models/disease-progression")
        resp = conn.getresponse()
        body = resp.read()
        conn.request("GET", "/v2/health/live")  # the connection and the server carry on
        assert conn.getresponse().status == 200
        conn.close()
    assert (resp.status, resp.getheader("content-type")) == (500, "application/json"), body
    oip_validator(json.loads(body), "metadata_model_error_response")
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert [r.getMessage() for r in logged] == ["GET /v2/models/disease-progression failed"]


def test_a_client_that_stops_reading_its_reply_is_cut_off(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    manifest = (EXAMPLES / "models" / "tumor-classifier" / "model.yaml").read_text("utf-8")
    publish(root, "identities", two_identities_onnx(), manifest)
    proc = ServeProcess(root, "--idle-timeout", "1", "--prediction-log", "off")
    n = 4_000_000  # a reply of 16 MB: more than the kernel's socket buffers hold
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, n], "datatype": "FP32",
                 "parameters": {"binary_data_size": 4 * n}},
                {"name": "z", "shape": [1], "datatype": "FP32", "data": [0.0]},
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    body = header + bytes(4 * n)
    request = (
        b"POST /v2/models/identities/infer HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: %d\r\nInference-Header-Content-Length: %d\r\n\r\n"
        % (len(body), len(header))
    ) + body
    host, port = proc.hostport.split(":")
    socks: list[socket.socket] = []
    try:
        for _ in range(2):  # each never reads its reply, which uvicorn would hold for ever
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.sendall(request)
            socks.append(sock)
        time.sleep(2 * 1 + 1.5)  # the deadline: twice the idle timeout without reading
        for sock in socks:
            sock.settimeout(5)
            got = 0
            try:
                while data := sock.recv(1 << 20):
                    got += len(data)
            except ConnectionResetError:
                pass
            assert got < 4 * n, "the whole reply was held for a client that did not read it"
        assert _request(proc, "GET", "/v2/health/live")[0] == 200
    finally:
        for sock in socks:
            sock.close()
        assert proc.terminate() == 0, proc.stderr()
