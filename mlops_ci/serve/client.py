"""Speaking to `mlops-ci serve` from inside mlops-ci: a server started as a subprocess on the
registry, and a small Open Inference Protocol client shaped like an onnxruntime session, so the
deploy smoke test runs the manifest's test cases through HTTP with the code `test` uses.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops_ci.errors import MlopsCiError
from mlops_ci.serve.protocol import DTYPES, ONNX_DATATYPES, decode_tensor, encode_request


class ServeError(MlopsCiError):
    """The server did not start, or answered a request with an error."""


@dataclass(frozen=True)
class _Node:
    """What callers read of an onnxruntime NodeArg: name, type and shape."""

    name: str
    type: str
    shape: list[int | None]


@contextlib.contextmanager
def running(registry: str, *, timeout_s: float = 60.0) -> Iterator[str]:
    """`mlops-ci serve --registry REGISTRY` on a free port of 127.0.0.1, ready; yields its base
    URL and stops it (SIGTERM, then a drain) on the way out. No prediction log is written."""
    argv = [sys.executable, "-m", "mlops_ci", "serve", "--registry", registry, "--port", "0",
            "--prediction-log", "off"]  # fmt: skip
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=os.environ.copy())
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode(errors="replace")
            if "http://" not in line:
                proc.wait(timeout_s)
                raise ServeError(f"mlops-ci serve did not start: {_tail(stderr)}")
            url = line.split()[2]
            _wait_ready(proc, url, timeout_s, stderr)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _tail(stderr: Any) -> str:
    stderr.seek(0)
    text: str = stderr.read().decode(errors="replace").strip()
    return text.splitlines()[-1] if text else "(no output)"


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float, stderr: Any) -> None:
    deadline = time.monotonic() + timeout_s
    host = url.removeprefix("http://")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeError(f"mlops-ci serve exited with {proc.returncode}: {_tail(stderr)}")
        conn = http.client.HTTPConnection(host, timeout=2)
        try:
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise ServeError(f"mlops-ci serve was not ready within {timeout_s:g} s")


class RemoteSession:
    """The parts of an onnxruntime InferenceSession that `evaluate` uses (`get_inputs`,
    `get_outputs`, `run`), answered by a model on an Open Inference Protocol server: by
    `/versions/<version>` when given, else the path clients call, whose replies must then come
    from `expect_version` when given."""

    def __init__(
        self,
        url: str,
        model: str,
        version: int | None = None,
        *,
        expect_version: int | None = None,
    ) -> None:
        self.host = url.removeprefix("http://").rstrip("/")
        self.model = model
        self.version = version if version is not None else expect_version
        self._path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        self._conn = http.client.HTTPConnection(self.host, timeout=60)
        meta = json.loads(self._call("GET", self._path, None, {})[1])
        self._inputs = [self._node(t) for t in meta.get("inputs", [])]
        self._outputs = [self._node(t) for t in meta.get("outputs", [])]

    @staticmethod
    def _node(t: Mapping[str, Any]) -> _Node:
        onnx_type = _ONNX_TYPES.get(str(t["datatype"]), "")
        shape = [d if d >= 0 else None for d in t["shape"]]
        return _Node(str(t["name"]), onnx_type, shape)

    def get_inputs(self) -> list[_Node]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Node]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
        names = list(output_names or [o.name for o in self._outputs])
        arrays = {k: np.asarray(v) for k, v in feeds.items()}
        body, json_length = encode_request(arrays, names)
        headers = {"Content-Type": "application/octet-stream",
                   "Inference-Header-Content-Length": str(json_length)}  # fmt: skip
        reply_headers, reply = self._call("POST", self._path + "/infer", body, headers)
        length = reply_headers.get("inference-header-content-length")
        head = json.loads(reply[: int(length)] if length else reply)
        if self.version is not None and head.get("model_version") != str(self.version):
            raise ServeError(
                f"{self.model}: version {head.get('model_version')} answered, not {self.version}"
            )
        offset = int(length) if length else 0
        found: dict[str, Any] = {}
        for out in head.get("outputs", []):
            size = (out.get("parameters") or {}).get("binary_data_size")
            dtype = DTYPES[out["datatype"]]
            if size is None:
                found[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
                continue
            raw = reply[offset : offset + size]
            offset += size
            found[out["name"]] = decode_tensor(raw, out["datatype"], out["shape"])
        return [found[n] for n in names]

    def _call(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[dict[str, str], bytes]:
        try:
            self._conn.request(method, path, body=body, headers=dict(headers))
            resp = self._conn.getresponse()
            data = resp.read()
        except OSError as exc:
            self._conn.close()
            raise ServeError(f"{self.host}{path}: {exc}") from None
        if resp.status != 200:
            try:
                message = json.loads(data).get("error", "")
            except ValueError:
                message = data[:200].decode(errors="replace")
            raise ServeError(f"{path}: HTTP {resp.status}: {message}")
        return {k.lower(): v for k, v in resp.getheaders()}, data

    def close(self) -> None:
        self._conn.close()


#: Protocol datatype -> onnxruntime's type string, for callers that read NodeArg.type.
_ONNX_TYPES = {v: k for k, v in ONNX_DATATYPES.items()}
