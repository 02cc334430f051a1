"""mlops_ci/s3.py, the registry's own S3 client: its signatures against botocore's signer, its
requests against SeaweedFS (which checks every signature) and moto, and its retries, errors,
addressing and proxies against a scripted HTTP server."""

from __future__ import annotations

import datetime
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3servers import REGION, S3Server, free_port

from mlops_ci import s3
from mlops_ci.registry import RegistryError, open_registry

# --- signatures: byte for byte what botocore's S3 signer writes -----------------------------


def _botocore_authorization(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    stamp = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stamp)
    keep = {k: v for k, v in headers.items() if k.startswith(("if-", "range", "content-type"))}
    request = AWSRequest(method=method, url=url, headers=keep, data=body)
    if url.startswith("https:"):  # mlops-ci sends every body unsigned over TLS, as botocore
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    signer = botocore.auth.S3SigV4Auth(Credentials("AKIDEXAMPLE", "sEcReT/+=", token), "s3", REGION)
    signer.add_auth(request)
    return str(request.headers["Authorization"])


class _Captured(Exception):
    """Raised by a patched pool instead of sending: carries what would have been sent."""


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, str], bytes]]:
    """Requests the client would send, captured instead of sent (the first attempt only)."""
    import urllib3

    sent: list[tuple[str, str, dict[str, str], bytes]] = []

    def urlopen(self, method, url, body=None, headers=None, **kwargs):
        sent.append((method, url, dict(headers or {}), body or b""))
        raise _Captured

    monkeypatch.setattr(urllib3.PoolManager, "urlopen", urlopen)
    monkeypatch.setattr(urllib3.ProxyManager, "urlopen", urlopen)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sEcReT/+=")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return sent


def _send(client: s3.Client, call) -> None:
    with pytest.raises(_Captured):
        call(client)


REQUESTS = {
    "get": lambda c: c.get("models/iris/1/model.onnx"),
    "tail": lambda c: c.get(".mlops/audit.jsonl", last_bytes=4096),
    "create": lambda c: c.put("iris/1/release.json", b'{"a": 1}', if_none_match=True),
    "swap": lambda c: c.put(".mlops/audit.jsonl", b"x\n", if_match='"0123abcd"'),
    "delete-if": lambda c: c.delete(".mlops/lock", if_match='"0123abcd"'),
    "head": lambda c: c.head("iris/config.pbtxt"),
    "odd key": lambda c: c.put("a b/ü+%&=;,$@!'()*.txt~", b""),
    "list": lambda c: c.list("reg/my models/", delimiter="/", start_after="reg/my models/a+b"),
}


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8333", "https://s3.example.com/base", None])
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////token=="])
@pytest.mark.parametrize("name", list(REQUESTS))
def test_each_request_is_signed_exactly_as_botocore_signs_it(
    captured, monkeypatch: pytest.MonkeyPatch, endpoint: str | None, token: str | None, name: str
) -> None:
    """SigV4 by hand is easy to get subtly wrong (a path's encoding, a query's order, a header
    left out): botocore's own S3 signer, given the same request and the same second, must
    write the same Authorization header. Over http the body is signed; over https it is not,
    as botocore does."""
    if token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    _send(s3.Client("my-bucket", REGION, endpoint), REQUESTS[name])
    method, url, headers, body = captured[0]
    assert headers["authorization"] == _botocore_authorization(
        method, url, headers, body, token, monkeypatch
    )
    assert (headers.get("x-amz-security-token") == token) and "host" not in headers
    signed_payload = headers["x-amz-content-sha256"]
    assert (signed_payload == "UNSIGNED-PAYLOAD") == (endpoint is None or "https" in endpoint)


def test_a_changed_signature_would_be_caught(captured, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above can fail: a signature over another path differs from botocore's."""
    _send(s3.Client("my-bucket", REGION, "http://127.0.0.1:8333"), REQUESTS["odd key"])
    method, url, headers, body = captured[0]
    assert headers["authorization"] != _botocore_authorization(
        method, url.replace("%20", "+"), headers, body, None, monkeypatch
    )


@pytest.mark.parametrize(
    ("bucket", "region", "endpoint", "url"),
    [
        ("models", "eu-west-1", None, "https://models.s3.eu-west-1.amazonaws.com/k"),
        ("my.models", "eu-west-1", None, "https://s3.eu-west-1.amazonaws.com/my.models/k"),
        ("models", "cn-north-1", None, "https://models.s3.cn-north-1.amazonaws.com.cn/k"),
        ("models", REGION, "http://127.0.0.1:9000", "http://127.0.0.1:9000/models/k"),
        ("models", REGION, "https://minio.lan/s3/", "https://minio.lan/s3/models/k"),
    ],
)
def test_addressing(captured, bucket: str, region: str, endpoint: str | None, url: str) -> None:
    """AWS itself: virtual-hosted, or path-style for a bucket whose name has a dot (TLS
    certificates cover one label); any other store: path-style under its endpoint."""
    _send(s3.Client(bucket, region, endpoint), lambda c: c.get("k"))
    assert captured[0][1] == url


# --- against real stores ---------------------------------------------------------------------


def _client(server: S3Server) -> s3.Client:
    return s3.Client(server.new_bucket(), REGION, server.endpoint)


def test_objects_round_trip_with_any_key(s3_server: S3Server) -> None:
    """Keys with spaces, '+', '%', non-ASCII: written, read, listed, deleted as they are named
    (a '+' a store decoded as a space would be another object)."""
    client = _client(s3_server)
    keys = ["dir/a b.txt", "dir/a+b.txt", "dir/50%.txt", "dir/ünï cödé.txt", "dir/sub/x=1&y"]
    for i, key in enumerate(keys):
        etag = client.put(key, f"body {i}".encode())
        assert etag.startswith('"')
        assert client.get(key).body == f"body {i}".encode()
        assert client.head(key).headers["etag"] == etag
    listed = client.list("dir/", delimiter="/")
    assert sorted(listed.objects) == sorted(k for k in keys if "sub/" not in k)
    assert listed.prefixes == ["dir/sub/"]
    for key in keys:
        client.delete(key)
    assert client.list("dir/").objects == {}


def test_listings_follow_every_page(s3_server: S3Server) -> None:
    client = _client(s3_server)
    keys = [f"p/{i:02d}" for i in range(7)] + ["p/sub/a", "p/sub/b", "q/other"]
    for key in keys:
        client.put(key, b"x")
    assert sorted(client.list("p/", page=2).objects) == keys[:-1]
    assert sorted(client.list("p/", page=2, start_after="p/04").objects) == keys[5:-1]
    paged = client.list("p/", delimiter="/", page=2)
    assert sorted(paged.objects) == keys[:7] and paged.prefixes == ["p/sub/"]


def test_conditions_and_ranges(s3_server: S3Server) -> None:
    client = _client(s3_server)
    etag = client.put("k", b"0123456789", if_none_match=True)
    with pytest.raises(s3.S3Error) as lost:
        client.put("k", b"other", if_none_match=True)
    assert lost.value.status in (409, 412)
    with pytest.raises(s3.S3Error) as stale:
        client.put("k", b"other", if_match='"00000000000000000000000000000000"')
    assert stale.value.status == 412
    assert client.put("k", b"0123456789ab", if_match=etag) != etag
    assert client.get("k", last_bytes=4).body == b"89ab"
    with pytest.raises(s3.S3Error) as missing:
        client.get("nothing")
    assert (missing.value.status, missing.value.code) == (404, "NoSuchKey")


def test_a_wrong_secret_is_refused_by_seaweedfs(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SeaweedFS checks signatures: the right secret is let in, a wrong one is not."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    client = _client(seaweedfs)
    client.put("k", b"x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key + "x")
    with pytest.raises(s3.S3Error) as refused:
        client.put("k", b"y")
    assert refused.value.status == 403 and refused.value.code == "SignatureDoesNotMatch"


def test_credentials_from_a_profile_file(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the environment's keys, botocore's chain finds them (here in a profile)."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    uri = seaweedfs.fresh_uri()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    config = tmp_path / "config"
    config.write_text(
        f"[profile ci]\naws_access_key_id = {seaweedfs.access_key}\n"
        f"aws_secret_access_key = {seaweedfs.secret_key}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "ci")
    reg = open_registry(uri)
    reg.write_bytes("k", b"from a profile")
    assert reg.read_bytes("k") == b"from a profile"


def test_no_credentials_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryError, match="cannot read k: no credentials: set AWS_ACCESS_KEY_ID"):
        open_registry("s3://bucket/r").read_bytes("k")
    monkeypatch.setenv("AWS_PROFILE", "nobody")  # botocore raises: one clear error all the same
    with pytest.raises(RegistryError, match=r"cannot read k: no credentials: .*\(nobody\)"):
        open_registry("s3://bucket/r").read_bytes("k")


# --- retries, errors, proxies: a scripted server ---------------------------------------------


class Scripted:
    """An HTTP server that answers each request with the next of `replies` (status, body and
    optionally headers), the last one over and over, and records what it was asked (`seen`)
    and the headers it was asked with (`headers`)."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, bytes] | tuple[int, bytes, dict[str, str]]] = [(200, b"")]
        self.seen: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                owner.seen.append((self.command, self.path))
                owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = owner.replies[min(len(owner.seen), len(owner.replies)) - 1]
                status, body = reply[0], reply[1]
                self.send_response(status)
                for name, value in (reply[2] if len(reply) > 2 else {}).items():  # type: ignore[misc]
                    self.send_header(name, value)
                self.send_header("ETag", '"abc"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scripted]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(s3, "_backoff", lambda attempt: None)
    server = Scripted()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _error(code: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode()


def test_a_busy_store_is_asked_again(scripted: Scripted) -> None:
    """503 SlowDown twice, then an answer: three attempts, the third one lands."""
    scripted.replies = [(503, _error("SlowDown")), (500, _error("InternalError")), (200, b"ok")]
    assert s3.Client("b", REGION, scripted.endpoint).get("k").body == b"ok"
    assert len(scripted.seen) == 3


def test_three_attempts_at_most(scripted: Scripted) -> None:
    scripted.replies = [(503, _error("SlowDown"))]
    with pytest.raises(s3.S3Error, match="SlowDown"):
        s3.Client("b", REGION, scripted.endpoint).get("k")
    assert len(scripted.seen) == s3.ATTEMPTS == 3


@pytest.mark.parametrize(("status", "code"), [(412, "PreconditionFailed"), (403, "AccessDenied")])
def test_an_answer_on_the_merits_is_not_retried(scripted: Scripted, status: int, code: str) -> None:
    scripted.replies = [(status, _error(code))]
    with pytest.raises(s3.S3Error) as refused:
        s3.Client("b", REGION, scripted.endpoint).put("k", b"x", if_none_match=True)
    assert (refused.value.status, refused.value.code, len(scripted.seen)) == (status, code, 1)


def test_an_error_without_a_body_is_named_by_its_status(scripted: Scripted) -> None:
    scripted.replies = [(404, b"")]
    with pytest.raises(s3.S3Error) as missing:
        s3.Client("b", REGION, scripted.endpoint).head("k")
    assert (missing.value.status, missing.value.code) == (404, "NotFound")


def test_a_document_type_in_an_answer_is_never_expanded(scripted: Scripted) -> None:
    """S3 never sends a DOCTYPE: a listing that has one (entities that expand a billion
    times, or read local files) is refused before parsing; so is an error body's."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<ListBucketResult><Contents><Key>&b;</Key></Contents></ListBucketResult>"
    )
    scripted.replies = [(200, bomb)]
    with pytest.raises(s3.S3Error, match="not S3's XML"):
        s3.Client("b", REGION, scripted.endpoint).list("")
    scripted.replies = [(400, bomb.replace(b"ListBucketResult", b"Error"))]
    with pytest.raises(s3.S3Error) as refused:
        s3.Client("b", REGION, scripted.endpoint).get("k")
    assert refused.value.code == "400" and "a" * 100 not in str(refused.value)


def test_a_dead_endpoint_is_tried_three_times_then_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    tries: list[int] = []
    monkeypatch.setattr(s3, "_backoff", tries.append)
    client = s3.Client("b", REGION, f"http://127.0.0.1:{free_port()}", connect_timeout_s=1)
    with pytest.raises(s3.S3Unreachable, match="refused"):
        client.get("k")
    assert tries == [0, 1]  # waited twice: three attempts


def test_a_silent_endpoint_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setattr(s3, "_backoff", lambda attempt: None)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepted by the kernel, never answered
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = s3.Client("b", REGION, endpoint, read_timeout_s=0.2)
        with pytest.raises(s3.S3Unreachable, match="timed out"):
            client.get("k")


def test_the_proxy_variables_are_honoured(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY carries the requests (asked with the full URL, as a proxy is), unless
    NO_PROXY names the store."""
    monkeypatch.setenv("HTTP_PROXY", scripted.endpoint)
    s3.Client("bucket", REGION, "http://store.internal:9000").get("k")
    assert scripted.seen == [("GET", "http://store.internal:9000/bucket/k")]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    s3.Client("bucket", REGION, scripted.endpoint).get("k")
    assert scripted.seen[-1] == ("GET", "/bucket/k")


def test_a_bucket_in_another_region_is_asked_there(scripted: Scripted) -> None:
    """A request signed for the wrong region is refused with the bucket's region named: the
    client signs for that one and asks again, as botocore does, and stays with it."""
    wrong = _error("AuthorizationHeaderMalformed")
    scripted.replies = [(400, wrong, {"x-amz-bucket-region": "eu-west-1"}), (200, b"ok")]
    client = s3.Client("b", REGION, scripted.endpoint)
    assert client.get("k").body == b"ok" and client.get("k").body == b"ok"
    scopes = [h["authorization"].split("/")[2] for h in scripted.headers]
    assert scopes == [REGION, "eu-west-1", "eu-west-1"]


def test_a_skewed_clock_is_corrected_by_the_stores(scripted: Scripted) -> None:
    """RequestTimeTooSkewed: the store's Date says how far off this machine's clock is; the
    client signs with the store's time from then on."""
    skewed = _error("RequestTimeTooSkewed")
    later = "Wed, 01 Dec 2100 10:00:00 GMT"
    scripted.replies = [(403, skewed, {"Date": later}), (200, b"ok")]
    client = s3.Client("b", REGION, scripted.endpoint)
    assert client.get("k").body == b"ok"
    assert [h["x-amz-date"][:8] for h in scripted.headers][1] == "21001201"
    scripted.replies = [(403, skewed, {"Date": later})]
    with pytest.raises(s3.S3Error, match="RequestTimeTooSkewed"):  # corrected once, not forever
        client.get("k")


def test_a_forked_child_opens_its_own_connections(scripted: Scripted) -> None:
    """A child forked with a client in hand must not read answers off the parent's sockets."""
    import os

    client = s3.Client("b", REGION, scripted.endpoint)
    client.get("k")
    parent = client._pool()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            client.get("k")
            os.write(write, b"1" if client._pool() is not parent else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert client._pool() is parent
