"""mlops_ci/s3.py, the registry's own S3 client: its signatures against botocore's signer, its
requests against SeaweedFS (which checks every signature) and moto, answers lost after a
write landed through a relay in front of both (`Lossy`), and its retries, errors, addressing,
proxies (also a CONNECT tunnel) and TLS verification against a scripted HTTP(S) server."""

from __future__ import annotations

import datetime
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
        if url.startswith("/"):  # a connection pool's request target: the URL on the wire
            default = {"http": 80, "https": 443}[self.scheme]
            port = "" if self.port in (None, default) else f":{self.port}"
            url = f"{self.scheme}://{self.host}{port}{url}"
        sent.append((method, url, dict(headers or {}), body or b""))
        raise _Captured

    monkeypatch.setattr(urllib3.PoolManager, "urlopen", urlopen)
    monkeypatch.setattr(urllib3.ProxyManager, "urlopen", urlopen)
    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", urlopen)
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
    "next page": lambda c: c.request(
        "GET", None, query={"list-type": "2", "continuation-token": "1/a+b==", "prefix": "ü/"}
    ),
    "spaced value": lambda c: c.put("k", b"x", if_match='  "a   b"  '),
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
    from botocore.auth import _host_from_url

    # the host signed is sent as signed: the host of the URL on the wire, as botocore reads it
    assert headers.get("x-amz-security-token") == token and headers["host"] == _host_from_url(url)
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
        # no host name's label either, as botocore tells them (a legacy us-east-1 name)
        ("legacy_models", REGION, None, "https://s3.us-east-1.amazonaws.com/legacy_models/k"),
        ("-models", REGION, None, "https://s3.us-east-1.amazonaws.com/-models/k"),
        ("m" * 64, REGION, None, f"https://s3.us-east-1.amazonaws.com/{'m' * 64}/k"),
        ("xn--models", REGION, None, "https://xn--models.s3.us-east-1.amazonaws.com/k"),
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


class _Handler(http.server.BaseHTTPRequestHandler):
    """The test servers' base: HTTP/1.1, quiet, and one way to answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[Any, str]:
    """A threaded HTTP server on a free port of 127.0.0.1, serving (polled every 0.05 s, so
    it stops quickly): the server and its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Scripted:
    """An HTTP server that answers each request with the next of `replies` (status, body and
    optionally headers), the last one over and over, and records what it was asked (`seen`)
    and the headers it was asked with (`headers`). `answer`, when set, replies instead: given
    a request's headers, its reply."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, bytes] | tuple[int, bytes, dict[str, str]]] = [(200, b"")]
        self.seen: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.answer: Callable[[dict[str, str]], tuple[int, bytes, dict[str, str]]] | None = None
        owner = self

        class Handler(_Handler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                owner.seen.append((self.command, self.path))
                asked = {k.lower(): v for k, v in self.headers.items()}
                owner.headers.append(asked)
                reply = (
                    owner.answer(asked)
                    if owner.answer
                    else owner.replies[min(len(owner.seen), len(owner.replies)) - 1]
                )
                extra = reply[2] if len(reply) > 2 else {}  # type: ignore[misc]
                self.send(reply[0], [*extra.items(), ("ETag", '"abc"')], reply[1])

            do_GET = do_PUT = do_DELETE = do_HEAD = _answer

        self.server, self.endpoint = _serving(Handler)


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


# --- review: what botocore did and a hand-made client must do too --------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["https://S3.Example.com:443/base", "http://LocalHost:80", "http://user:pw@127.0.0.1:9000"],
)
def test_the_host_signed_is_the_host_sent(captured, monkeypatch, endpoint: str) -> None:
    """HTTP sends a host lower-cased, without its scheme's default port and without a user:
    the signature must be over that host, as botocore's is (else every request is refused)."""
    _send(s3.Client("my-bucket", REGION, endpoint), REQUESTS["get"])
    method, url, headers, body = captured[0]
    assert headers["authorization"] == _botocore_authorization(
        method, url, headers, body, None, monkeypatch
    )


def test_an_upper_case_endpoint_is_let_in_by_seaweedfs(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, against a store that checks signatures: LOCALHOST is sent as localhost."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    upper = seaweedfs.endpoint.replace("127.0.0.1", "LOCALHOST")
    client = s3.Client(seaweedfs.new_bucket(), REGION, upper)
    client.put("k", b"x")
    assert client.get("k").body == b"x"


def test_a_key_with_dot_segments_is_that_key(s3_server: S3Server) -> None:
    """A key is a name, not a path: 'a/../b' is an object of its own, not 'b' (urllib3's
    PoolManager resolves dot segments in a URL; the request signed for the key then either is
    refused for its signature, or, on a store that checks none, writes another object).
    SeaweedFS, a file system underneath, refuses such a key itself: for what it is."""
    client = _client(s3_server)
    client.put("b", b"the other object")
    for key in ("a/../b", "c/./d"):
        if s3_server.name == "seaweedfs":
            with pytest.raises(s3.S3Error) as refused:
                client.put(key, key.encode())
            assert (refused.value.status, refused.value.code) == (400, "InvalidRequest")
            continue
        client.put(key, key.encode())
        assert client.get(key).body == key.encode()
    assert client.get("b").body == b"the other object"
    if s3_server.name != "seaweedfs":
        assert sorted(client.list("").objects) == ["a/../b", "b", "c/./d"]


def test_stored_bytes_are_read_as_stored(seaweedfs: S3Server, monkeypatch) -> None:
    """An object stored with a Content-Encoding is read as its bytes, as botocore reads it:
    never decompressed on the way (a digest over the stored bytes would then fail, and the
    last bytes of a gzip stream cannot be decompressed at all)."""
    import gzip

    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    client = _client(seaweedfs)
    stored = gzip.compress(b"a line\n" * 100)
    client.request("PUT", "log.gz", headers={"content-encoding": "gzip"}, body=stored)
    assert client.get("log.gz").body == stored
    assert client.get("log.gz", last_bytes=8).body == stored[-8:]


def test_a_proxy_named_without_a_scheme_is_used(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY=host:port (as curl and botocore take it) is an http:// proxy, not a failure
    of every request."""
    monkeypatch.setenv("HTTP_PROXY", scripted.endpoint.removeprefix("http://"))
    assert s3.Client("bucket", REGION, "http://store.internal:9000").get("k").body == b""
    assert scripted.seen == [("GET", "http://store.internal:9000/bucket/k")]


def _listing(keys: list[str], *, encoded: bool = True, truncated: str = "") -> bytes:
    contents = "".join(
        f"<Contents><Key>{k}</Key><ETag>&quot;e&quot;</ETag></Contents>" for k in keys
    )
    more = (
        f"<IsTruncated>true</IsTruncated><NextContinuationToken>{truncated}</NextContinuationToken>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{contents}{'<EncodingType>url</EncodingType>' if encoded else ''}"
        f"{more if truncated else '<IsTruncated>false</IsTruncated>'}</ListBucketResult>"
    ).encode()


def test_keys_are_decoded_only_when_the_store_encoded_them(scripted: Scripted) -> None:
    """encoding-type=url is a request a store may ignore: keys come back url-encoded only when
    the answer says <EncodingType>url</EncodingType> (botocore decodes only then). Decoding a
    key the store sent as it is turns 'a+b' into 'a b', another object."""
    client = s3.Client("b", REGION, scripted.endpoint)
    scripted.replies = [(200, _listing(["d/a%2Bb", "d/a+c", "d/50%25"]))]
    assert sorted(client.list("d/").objects) == ["d/50%", "d/a c", "d/a+b"]
    scripted.replies = [(200, _listing(["d/a+b", "d/50%"], encoded=False))]
    assert sorted(client.list("d/").objects) == ["d/50%", "d/a+b"]


def _within(seconds: float, call):
    """call(), which must end (return or raise) within `seconds`: its outcome."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    return outcome[0]


def test_a_listing_whose_token_repeats_ends(scripted: Scripted) -> None:
    """A store (or a proxy) that answers every page with the same continuation token would
    be asked forever; botocore's paginator refuses a token it was given before."""
    scripted.replies = [(200, _listing(["a"], truncated="same"))]
    outcome = _within(10, lambda: s3.Client("b", REGION, scripted.endpoint).list(""))
    assert isinstance(outcome, s3.S3Error) and "same continuation token" in str(outcome)
    assert len(scripted.seen) == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_error("AccessDenied"), "AccessDenied"),  # a 200 carrying S3's error
        (b"<html><body>Sign in to the portal</body></html>", "InvalidResponse"),  # not S3
    ],
)
def test_a_listing_answer_that_is_not_a_listing_is_an_error(
    scripted: Scripted, body: bytes, code: str
) -> None:
    """A 200 whose XML is not a ListBucketResult is not an empty bucket: read as one, a
    registry would look empty (no versions, no audit log)."""
    scripted.replies = [(200, body)]
    with pytest.raises(s3.S3Error) as refused:
        s3.Client("b", REGION, scripted.endpoint).list("")
    assert refused.value.code == code


def test_requests_in_flight_when_the_region_is_corrected_are_corrected_too(
    scripted: Scripted,
) -> None:
    """Many threads, one client (registry.together): every first request is signed for the
    wrong region and refused naming the right one. The first refusal read moves the client;
    each other refusal must still send its request again (its region is the client's now),
    not fail."""
    threads = 8
    arrived = threading.Barrier(threads, timeout=5)
    wrong = _error("AuthorizationHeaderMalformed")

    def answer(headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if "/eu-west-1/" in headers["authorization"]:
            return 200, b"ok", {}
        arrived.wait()  # every first request is in flight before any is refused
        return 400, wrong, {"x-amz-bucket-region": "eu-west-1"}

    scripted.answer = answer
    client = s3.Client("b", REGION, scripted.endpoint)
    results: list[object] = []

    def get() -> None:
        try:
            results.append(client.get("k").body)
        except s3.S3Error as exc:
            results.append(exc)

    workers = [threading.Thread(target=get) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert results == [b"ok"] * threads


def _over_tls(scripted: Scripted, tmp_path: Path) -> tuple[Path, str]:
    """The scripted server answering over TLS with a self-signed certificate: (that
    certificate, the https:// endpoint)."""
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    scripted.server.socket = context.wrap_socket(scripted.server.socket, server_side=True)
    return cert, scripted.endpoint.replace("http:", "https:")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no system trusts, and its key."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlops-ci test store")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "store.pem", directory / "store.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_is_verified_against_the_bundle_named(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A store over TLS whose certificate no system trusts is refused (no request goes out to
    a server that may not be the store), unless AWS_CA_BUNDLE, or REQUESTS_CA_BUNDLE as
    botocore also reads it, names a bundle that trusts it. An empty variable is no bundle."""
    cert, endpoint = _over_tls(scripted, tmp_path)
    scripted.replies = [(200, b"trusted")]
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CA_BUNDLE", "")
    with pytest.raises(s3.S3Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
        s3.Client("b", REGION, endpoint).get("k")
    assert scripted.seen == []
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    assert s3.Client("b", REGION, endpoint).get("k").body == b"trusted"
    monkeypatch.delenv("AWS_CA_BUNDLE")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    assert s3.Client("b", REGION, endpoint).get("k").body == b"trusted"


def test_a_redirecting_endpoint_says_where_to(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint that redirects (http:// to a store only on https://, a load balancer's
    moved address) is not followed, whose signature would not hold there: the message says
    where it points, not just "301"."""
    moved = b"<html><body><h1>301 Moved Permanently</h1></body></html>"  # as a web server says
    scripted.replies = [(301, moved, {"Location": "https://store.example:9000/bucket/r/k"})]
    monkeypatch.setenv("AWS_ENDPOINT_URL", scripted.endpoint)
    with pytest.raises(RegistryError) as refused:
        open_registry("s3://bucket/r").read_bytes("k")
    assert str(refused.value) == (
        "s3://bucket/r: cannot read k: 301: redirected to https://store.example:9000/bucket/r/k"
    )
    assert len(scripted.seen) == 1


def test_empty_profile_and_file_variables_count_as_unset(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A workflow's `AWS_PROFILE: ${{ vars.AWS_PROFILE }}` is "" when the variable is not
    defined: "" is no profile (botocore would look for a profile named "" and fail), and an
    empty AWS_CONFIG_FILE or AWS_SHARED_CREDENTIALS_FILE is the usual file under ~/.aws."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    uri = seaweedfs.fresh_uri()
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {seaweedfs.access_key}\n"
        f"aws_secret_access_key = {seaweedfs.secret_key}\n"
    )
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
    ):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("AWS_CONFIG_FILE", "")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "")
    reg = open_registry(uri)
    reg.write_bytes("k", b"from ~/.aws/credentials")
    assert reg.read_bytes("k") == b"from ~/.aws/credentials"


def test_no_proxy_may_name_the_store_with_its_port(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_PROXY=host:port names the store as botocore matches it (against host and port as
    well as the host alone): its requests go straight to it, not to the proxy."""
    store = Scripted()
    try:
        monkeypatch.setenv("HTTP_PROXY", scripted.endpoint)
        monkeypatch.setenv("NO_PROXY", f"example.org,{store.endpoint.removeprefix('http://')}")
        s3.Client("bucket", REGION, store.endpoint).get("k")
        assert (scripted.seen, store.seen) == ([], [("GET", "/bucket/k")])
    finally:
        store.server.shutdown()
        store.server.server_close()


class Lossy:
    """A relay in front of a real store that, for the requests `drop` picks, sends the
    request on, lets the store act on it, and then hangs up instead of answering: a response
    lost on the way, after the write landed. Signatures hold: the store sees the Host the
    client signed."""

    def __init__(
        self,
        upstream: str,
        drop: Callable[[str, str, dict[str, str]], bool],
        conflict: Callable[[str, str, dict[str, str]], bool] | None = None,
    ) -> None:
        """`conflict`: the requests answered 409 ConditionalRequestConflict, not sent on
        (as AWS answers a conditional request while another on the key is in flight)."""
        import http.client

        self.dropped: list[tuple[str, str]] = []
        owner = self
        target = urlparse_netloc(upstream)

        class Handler(_Handler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                asked = {k.lower(): v for k, v in self.headers.items()}
                if conflict is not None and conflict(self.command, self.path, asked):
                    xml = b"<Error><Code>ConditionalRequestConflict</Code></Error>"
                    self.send(409, [("Content-Type", "application/xml")], xml)
                    return
                conn = http.client.HTTPConnection(*target, timeout=10)
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    conn.putheader(name, value)
                conn.endheaders(body or None)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                if drop(self.command, self.path, asked):
                    owner.dropped.append((self.command, self.path))
                    self.close_connection = True  # the store acted; its answer is lost
                    return
                hop = ("content-length", "connection", "transfer-encoding")
                kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in hop]
                self.send(answer.status, kept, data)

            do_GET = do_PUT = do_DELETE = do_HEAD = _relay

        self.server, self.endpoint = _serving(Handler)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def urlparse_netloc(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    parts = urlparse(url)
    return parts.hostname or "", parts.port or 80


def _first(predicate: Callable[[str, dict[str, str]], bool]) -> Callable[..., bool]:
    """A `drop` that picks, of each key, the first request `predicate` picks."""
    done: set[str] = set()
    lock = threading.Lock()

    def drop(method: str, path: str, headers: dict[str, str]) -> bool:
        with lock:
            if path in done or not predicate(method, headers):
                return False
            done.add(path)
            return True

    return drop


@pytest.mark.parametrize(
    "lost",
    ["create", "swap", "conditional delete"],
)
def test_a_conditional_write_whose_answer_is_lost_is_done_once(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """The registry's writes are conditional, and a lost answer makes the client's retry
    meet its own write's condition (412, or 404 for a delete): a version folder, a log's
    append, the lock's take and release still happen exactly once, on a real store."""
    picks = {
        "create": lambda m, h: m == "PUT" and h.get("if-none-match") == "*",
        "swap": lambda m, h: m == "PUT" and "if-match" in h,
        "conditional delete": lambda m, h: m == "DELETE" and "if-match" in h,
    }
    monkeypatch.setattr(s3, "_backoff", lambda attempt: None)
    uri = s3_server.fresh_uri()
    lossy = Lossy(s3_server.endpoint, _first(picks[lost]))
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", lossy.endpoint)
        store = open_registry(uri).store
        store.append(".mlops/log.jsonl", b'{"n": 1}\n')
        store.append(".mlops/log.jsonl", b'{"n": 2}\n')
        store.put_folder("m/1", {"release.json": b"{}", "model.onnx": b"onnx"})
        with store.lock(5):
            pass
        with store.lock(5):  # released: taken again at once
            pass
        lost_keys = sorted(path.split("/", 3)[-1] for _, path in lossy.dropped)
        assert (
            lost_keys
            == {
                "create": [".mlops/lock", ".mlops/log.jsonl", "m/1/model.onnx", "m/1/release.json"],
                "swap": [".mlops/log.jsonl"],
                "conditional delete": [".mlops/lock"],
            }[lost]
        )
        assert store.read_log(".mlops/log.jsonl") == b'{"n": 1}\n{"n": 2}\n'
        assert store.get("m/1/model.onnx") is not None
        assert store.get(".mlops/lock") is None
    finally:
        lossy.close()


def test_a_lock_release_met_by_a_conflict_still_releases(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS answers a conditional request 409 ConditionalRequestConflict while another one on
    the key is in flight (here: a waiter's create of the lock): the release took that for
    "a deploy took the lock over" and left its own lock, so every deploy after it waited out
    the TTL (600 s) and gave up. A 409 is asked again; only a 412 (or 404) means not ours."""
    uri = s3_server.fresh_uri()
    conflicts = _first(lambda m, h: m == "DELETE" and "if-match" in h)
    relay = Lossy(s3_server.endpoint, lambda *a: False, conflict=conflicts)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.endpoint)
        store = open_registry(uri).store
        with store.lock(5):
            pass
        assert store.get(".mlops/lock") is None
        with store.lock(1):  # released: taken again at once
            pass
    finally:
        relay.close()


def test_a_missing_bucket_is_an_error_not_an_empty_registry(s3_server: S3Server) -> None:
    """404 NoSuchBucket is not 404 NoSuchKey: a mistyped bucket must not read as a registry
    with nothing in it (reads None, lists nothing), but say what is wrong."""
    reg = open_registry(f"s3://{s3_server.new_bucket()}-missing/r")
    for read in (lambda: reg.read_bytes("k"), lambda: reg.list_keys(""), reg.models):
        with pytest.raises(RegistryError, match="NoSuchBucket"):
            read()


def test_credentials_that_expire_are_refreshed(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """botocore's refreshable credentials (here a credential_process whose credentials
    expire within botocore's refresh window) are asked again for each request: a rotated
    secret is used at once, by the same registry, never the one resolved first."""
    import json
    import sys

    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    uri = seaweedfs.fresh_uri()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    current = tmp_path / "current.json"
    process = tmp_path / "process.py"
    process.write_text(
        "import datetime, json, sys\n"
        f"key, secret = json.load(open({str(current)!r}))\n"
        "soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': key, 'SecretAccessKey': secret,\n"
        "                  'Expiration': soon.strftime('%Y-%m-%dT%H:%M:%SZ')}))\n"
    )
    config = tmp_path / "config"
    config.write_text(f"[default]\ncredential_process = {sys.executable} {process}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    reg = open_registry(uri)
    current.write_text(json.dumps([seaweedfs.access_key, seaweedfs.secret_key]))
    reg.write_bytes("k", b"1")
    current.write_text(json.dumps([seaweedfs.access_key, "rotated away"]))
    with pytest.raises(RegistryError, match="SignatureDoesNotMatch"):
        reg.read_bytes("k")
    current.write_text(json.dumps([seaweedfs.access_key, seaweedfs.secret_key]))
    assert reg.read_bytes("k") == b"1"


def test_a_dead_proxy_is_named_as_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the proxy is what is down, the message says so (not the store's connection
    refused, which sends a user to look at the wrong machine); a proxy URL with a scheme
    other than http(s) is named as such, not read as a host called 'ftp'."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setattr(s3, "_backoff", lambda attempt: None)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxy = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    with pytest.raises(s3.S3Unreachable) as refused:
        s3.Client("b", REGION, "http://store.internal:9000").get("k")
    assert str(refused.value) == (
        f"the proxy {proxy}: Failed to establish a new connection: [Errno 111] Connection refused"
    )
    monkeypatch.setenv("HTTP_PROXY", "ftp://127.0.0.1:21")
    with pytest.raises(s3.S3Unreachable, match="unsupported scheme ftp"):
        s3.Client("b", REGION, "http://store.internal:9000").get("k")


@pytest.mark.parametrize("endpoint", ["http://[::1", "http://127.0.0.1:99999", "127.0.0.1:9000"])
def test_a_malformed_endpoint_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    """A typo in AWS_ENDPOINT_URL is a usage error naming the variable, not an internal error
    (Python's URL parser raises on an unclosed IPv6 bracket or a port out of range)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(RegistryError, match=r"S3 endpoint .* \(AWS_ENDPOINT_URL, or endpoint"):
        open_registry("s3://bucket/r")


def test_keys_with_sub_delimiters_round_trip(s3_server: S3Server) -> None:
    """RFC 3986's sub-delimiters and other characters S3 signs percent-encoded ('~' alone
    stays as it is), and a key of many segments, against stores that check (SeaweedFS) or
    store (moto) exactly what was signed."""
    client = _client(s3_server)
    keys = ["k/~tilde", "k/!*'()", "k/;:@$,", "k/[brackets]{braces}^`|", "k/a/b/c/d/e/f.txt"]
    for key in keys:
        client.put(key, key.encode(), if_none_match=True)
    assert sorted(client.list("k/").objects) == sorted(keys)
    assert [client.get(key).body for key in keys] == [key.encode() for key in keys]


class Tunnel:
    """An HTTPS proxy as corporate networks run them: CONNECT host:port, then bytes both
    ways. `asked`: the CONNECT lines it was sent."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(1)
            line = head.split(b"\r\n")[0].decode()
            self.asked.append(line)
            host, port = line.split()[1].rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()


def test_tls_through_a_tunnelling_proxy(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """HTTPS_PROXY for a store on https://: the proxy is asked to CONNECT, the store's
    certificate is still verified end to end, and the request inside is the store's."""
    cert, endpoint = _over_tls(scripted, tmp_path)
    scripted.replies = [(200, b"tunnelled")]
    tunnel = Tunnel()
    try:
        monkeypatch.setenv("HTTPS_PROXY", tunnel.address)
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        assert s3.Client("b", REGION, endpoint).get("k").body == b"tunnelled"
        netloc = endpoint.removeprefix("https://")
        assert tunnel.asked[0].startswith(f"CONNECT {netloc} ")
        assert scripted.seen == [("GET", "/b/k")] and scripted.headers[0]["host"] == netloc
        monkeypatch.delenv("AWS_CA_BUNDLE")  # the tunnel changes nothing about trust
        with pytest.raises(s3.S3Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
            s3.Client("b", REGION, endpoint).get("k")
    finally:
        tunnel.listener.close()


def test_a_listing_cut_short_without_a_token_is_an_error(scripted: Scripted) -> None:
    """IsTruncated with no NextContinuationToken (a store that ignores list-type=2, say) is
    a listing that cannot be finished: an error, not the first page taken for the whole
    (a registry would miss versions, and number the next one as if they were not there)."""
    first_page = _listing(["a"]).replace(
        b"<IsTruncated>false</IsTruncated>",
        b"<IsTruncated>true</IsTruncated><NextMarker>a</NextMarker>",
    )
    scripted.replies = [(200, first_page)]
    with pytest.raises(s3.S3Error, match="cut short"):
        s3.Client("b", REGION, scripted.endpoint).list("")


# --- where the store is: the environment, then the shared config file -------------------------


def _config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    config = tmp_path / "aws-config"
    config.write_text(text)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def test_a_profile_s_endpoint_and_region_are_the_store_s(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An endpoint_url in ~/.aws/config (MinIO, R2, a SeaweedFS of the team's) is where the
    registry is, as boto3 took it, when no AWS_ENDPOINT_URL says otherwise."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    uri = seaweedfs.fresh_uri()
    _config_file(
        tmp_path,
        monkeypatch,
        f"[profile team]\nendpoint_url = {seaweedfs.endpoint}\nregion = eu-west-3\n",
    )
    monkeypatch.setenv("AWS_PROFILE", "team")
    assert s3.configured() == (seaweedfs.endpoint, "eu-west-3")
    reg = open_registry(uri)
    reg.write_bytes("k", b"through the profile's endpoint")
    assert reg.read_bytes("k") == b"through the profile's endpoint"


def test_the_order_of_endpoints_is_botocore_s(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _config_file(
        tmp_path,
        monkeypatch,
        "[default]\nendpoint_url = http://global:1\nservices = local\n"
        "[services local]\ns3 =\n  endpoint_url = http://for-s3:2\n"
        "[profile quiet]\nendpoint_url = http://quiet:3\nignore_configured_endpoint_urls = true\n",
    )
    assert s3.configured() == ("http://for-s3:2", "us-east-1")  # the service's section first
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:4")
    assert s3.configured()[0] == "http://env:4"  # the environment before the file
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://env-s3:5")
    assert s3.configured()[0] == "http://env-s3:5"
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert s3.configured()[0] is None  # AWS itself
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_PROFILE", "quiet")
    assert s3.configured()[0] is None
    monkeypatch.setenv("AWS_PROFILE", "nobody")  # credentials will say so; no endpoint here
    assert s3.configured() == (None, "us-east-1")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert s3.configured() == (None, "ap-south-1")
