"""Registries for the serve tests: the example models converted to ONNX once per test process,
published and rolled back with deploy's own functions, and `mlops-ci serve` as a subprocess.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "model-repo"


@dataclass(frozen=True)
class ExampleModel:
    name: str
    manifest: Path
    onnx: Path

    @property
    def document(self) -> dict:
        return yaml.safe_load(self.manifest.read_text(encoding="utf-8"))


class ExampleModels(Mapping[str, ExampleModel]):
    """The example models converted with mlops_ci.convert (parity-checked), each on first use
    and once per test session: the xdist workers share `cache` under a file lock."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._paths = {p.parent.name: p for p in _manifests()}

    def __getitem__(self, name: str) -> ExampleModel:
        import fcntl

        from mlops_ci import convert, manifest

        path = self._paths[name]
        out = self.cache / name
        out.mkdir(parents=True, exist_ok=True)
        with (self.cache / f"{name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / "done").exists():
                result = convert.run(manifest.load(path, root=EXAMPLES), out)
                assert result.passed, result.summary
                (out / "done").touch()
        return ExampleModel(name, path, out / "model.onnx")

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _manifests() -> list[Path]:
    from mlops_ci import manifest

    return manifest.find_manifests(EXAMPLES / "models")


def publish(
    registry: Path | str, name: str, onnx: bytes, manifest_text: str, *, semver: str | None = None
) -> int:
    """Publish a model through deploy.publish (the real one: staged version folder, audit
    record, then config.pbtxt), as semver `semver` when given; returns the registry version."""
    from mlops_ci import deploy
    from mlops_ci.registry import open_registry

    doc = yaml.safe_load(manifest_text)
    if semver is not None:
        doc["metadata"]["version"] = semver
        manifest_text = yaml.safe_dump(doc, sort_keys=False)
    candidate = deploy.Candidate(
        name=name,
        version=str(doc["metadata"]["version"]),
        manifest_text=manifest_text.encode(),
        manifest_data=doc,
        artifact_path=doc["spec"]["artifact"]["path"],
        artifact_sha256=doc["spec"]["artifact"]["sha256"],
        onnx=onnx,
        onnx_info={"sha256": hashlib.sha256(onnx).hexdigest(), "opset": 17, "converter": "test"},
    )
    return deploy.publish(open_registry(registry), candidate, deploy.Provenance()).registry_version


def rollback(registry: Path | str, name: str, version: int) -> None:
    """deploy.rollback: serve `version` again (its digest is checked first)."""
    from mlops_ci import deploy
    from mlops_ci.registry import open_registry

    deploy.rollback(open_registry(registry), name, version, "serve test", deploy.Provenance())


def point_at(registry: Path | str, name: str, version: int) -> None:
    """Rewrite config.pbtxt by hand, as anyone with write access to the registry can, without
    deploy's checks: to show what the server does with a version deploy would refuse."""
    from mlops_ci import triton
    from mlops_ci.registry import open_registry

    reg = open_registry(registry)
    text = reg.config_text(name)
    assert text is not None
    reg.write_bytes(f"{name}/config.pbtxt", triton.with_version(text, version).encode())


def with_sample_rate(manifest_text: str, rate: float) -> str:
    """The manifest with spec.serving.prediction_log.sample_rate set."""
    doc = yaml.safe_load(manifest_text)
    doc["spec"].setdefault("serving", {})["prediction_log"] = {"sample_rate": rate}
    return yaml.safe_dump(doc, sort_keys=False)


class ServeProcess:
    """`python -m mlops_ci serve` as a real subprocess on a free port of 127.0.0.1."""

    def __init__(self, registry: Path | str, *args: str, env: dict[str, str] | None = None):
        import os
        import subprocess
        import sys

        self.stderr_path = Path(str(registry).removeprefix("file://")).parent / "serve-stderr.log"
        if str(registry).startswith("s3://"):
            import tempfile

            self.stderr_path = Path(tempfile.mkdtemp()) / "serve-stderr.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlops_ci",
                "serve",
                "--registry",
                str(registry),
                "--port",
                "0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "http://" not in line:
            self.proc.wait(10)
            raise RuntimeError(f"serve did not start: {line}{self.stderr()}")
        self.url = line.split()[2]
        self.hostport = self.url.removeprefix("http://")
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.stderr()}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"serve not ready after {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def terminate(self, timeout: float = 20) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._stderr.close()
            if self.proc.stdout:
                self.proc.stdout.close()


def two_identities_onnx() -> bytes:
    """An ONNX model that hands back its two inputs: `x` of any width, `z` of any length; a
    model may take tensors of unequal batch sizes, as this one does."""
    from onnx import TensorProto, helper

    def tensor(name: str, dims: list[str]) -> object:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["z"], ["w"])],
        "identities",
        [tensor("x", ["n", "m"]), tensor("z", ["k"])],
        [tensor("y", ["n", "m"]), tensor("w", ["k"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def constant_onnx() -> bytes:
    """An ONNX model without inputs: it answers [[1, 2]] whatever it is asked."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    value = numpy_helper.from_array(np.array([[1.0, 2.0]], dtype=np.float32))
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=value)],
        "constant",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def strings_onnx() -> bytes:
    """An ONNX model of a BYTES input `x` ([n, 1]): `y` hands it back, `s` is its shape."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Shape", ["x"], ["s"])],
        "strings",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["n", 1])],
        [
            helper.make_tensor_value_info("y", TensorProto.STRING, ["n", 1]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())
