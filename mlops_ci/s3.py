"""A small S3 client for the registry's own requests: get (whole or its last bytes), put (plain,
create-only, or compare-and-swap), delete (optionally conditional), head and list, signed with
AWS Signature Version 4 and sent over a pool of kept-alive connections.

Why not botocore for these: a registry publish is a dozen small requests, and botocore spends
about 1 ms of CPU on each (its event hooks, endpoint rules, validation, serialisation and
parsing), which is most of a small publish on a nearby store and holds the interpreter's lock
while the other requests of the same round trip wait. This client spends well under half of that,
and sends what the registry needs and nothing else: conditional deletes, no `Expect:
100-continue` round trip before a body. botocore still resolves the credentials when the
environment does not hold them (profiles, SSO, web identity, instance roles), so every source
it knows works here too.

Retries follow botocore's "standard" mode: 3 attempts, for connection failures, timeouts, 429,
500, 502, 503 and 504, with a jittered exponential wait. A write whose response was lost and
whose retry then meets its own condition is the caller's to recognise (registry.py does). As
botocore does, a request signed for the wrong region is sent again for the bucket's, and a
clock the store finds skewed is corrected by the store's.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_plus, urlparse

#: botocore's "standard" retry mode: this many attempts in all.
ATTEMPTS = 3
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRY_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ThrottlingException"})
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED = "UNSIGNED-PAYLOAD"
#: What S3 lets through unencoded in a path and in a query (RFC 3986's unreserved characters).
_UNRESERVED = "-_.~"
#: A bucket name that can be a host name's label (botocore's test for virtual-hosted
#: addressing): not one with a dot (TLS certificates cover one label), an upper-case letter
#: or an underscore (legacy us-east-1 names), nor too short or long.
_HOST_LABEL = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


class S3Failure(Exception):
    """A request that did not succeed: the store's error answer (`S3Error`) or none at all
    (`S3Unreachable`). `status` and `code` are the answer's (None and "" without one)."""

    status: int | None = None
    code = ""


class S3Error(S3Failure):
    """The store answered with an error status. `code` is S3's error code (`NoSuchKey`,
    `PreconditionFailed`, …; for a bodiless answer such as HEAD's, the status in words)."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.status: int = status
        self.code = code
        self.message = message


class S3Unreachable(S3Failure):
    """No answer: the endpoint refused or dropped the connection, or timed out, on every
    attempt; or there are no credentials to sign with."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass(frozen=True)
class _Where:
    """Where a request goes and whom it is signed for: replaced whole when the region is
    corrected, so a thread never signs for one region and sends to another's host."""

    region: str
    origin: str  # scheme://host
    host: str  # the Host header, as HTTP sends it
    path: str  # the bucket's path under the origin ("" when the host names the bucket)


@dataclass(frozen=True)
class Listing:
    """One listing: objects (key → ETag) and, with a delimiter, the common prefixes."""

    objects: dict[str, str] = field(default_factory=dict)
    prefixes: list[str] = field(default_factory=list)


def credentials() -> tuple[str, str, str | None]:
    """The access key, secret and session token to sign with, resolved as botocore does: the
    environment's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY first (read here, which spares
    importing botocore on CI), else botocore's chain, whose credentials refresh themselves."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return key, secret, os.environ.get("AWS_SESSION_TOKEN") or None
    try:
        import botocore.exceptions
    except ImportError:
        raise S3Unreachable(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or install "
            "boto3 for profiles, SSO and instance roles)"
        ) from None
    try:
        frozen = _botocore_credentials().get_frozen_credentials()
    except botocore.exceptions.BotoCoreError as exc:  # a profile that is not there, …
        raise S3Unreachable(f"no credentials: {exc}") from exc
    return frozen.access_key, frozen.secret_key, frozen.token or None


#: What picks botocore's credentials: one chain per combination (a chain costs ~0.3 s to build).
_CHAIN_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
)
_CHAINS: dict[tuple[str | None, ...], Any] = {}
_CHAINS_LOCK = threading.Lock()


def _session_variables() -> dict[str, tuple[Any, ...]]:
    """botocore's session variables that name a profile or a file, reading only the ones set
    to something: botocore takes AWS_PROFILE="" for a profile named "" (and fails), and an
    empty AWS_CONFIG_FILE for a file named "" (and ignores ~/.aws/config)."""
    # botocore's own definitions of these three (name in the config file, variables, default)
    defaults = {
        "profile": (["AWS_DEFAULT_PROFILE", "AWS_PROFILE"], None),
        "config_file": (["AWS_CONFIG_FILE"], "~/.aws/config"),
        "credentials_file": (["AWS_SHARED_CREDENTIALS_FILE"], "~/.aws/credentials"),
    }
    return {
        name: (None, [n for n in names if os.environ.get(n)], default, None)
        for name, (names, default) in defaults.items()
    }


def _botocore_credentials() -> Any:
    """botocore's credentials for this environment (they refresh themselves)."""
    import botocore.session

    which = tuple(os.environ.get(name) for name in _CHAIN_VARIABLES)
    with _CHAINS_LOCK:
        found = _CHAINS.get(which)
        if found is None:
            found = botocore.session.Session(session_vars=_session_variables()).get_credentials()
            if found is None:
                raise S3Unreachable(
                    "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, or a role for this machine"
                )
            _CHAINS[which] = found
        return found


def configured() -> tuple[str | None, str]:
    """The endpoint (None: AWS itself) and the region, as botocore resolves them for S3:
    AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then the shared config file's (the profile's
    `services` section's `s3.endpoint_url`, then its `endpoint_url`), none at all when
    AWS_IGNORE_CONFIGURED_ENDPOINT_URLS (or the profile's ignore_configured_endpoint_urls) is
    true; AWS_REGION, then AWS_DEFAULT_REGION, then the profile's `region`, then us-east-1.
    The config file is read (and botocore imported) only when the environment leaves
    something to it and the file exists."""
    ignore = os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
    endpoint = (
        None
        if ignore
        else (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None)
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if (endpoint or ignore) and region:
        return endpoint, region
    scoped, services = _shared_config()
    if (
        endpoint is None
        and not ignore
        and str(scoped.get("ignore_configured_endpoint_urls", "")).lower() != "true"
    ):
        endpoint = (services.get("s3") or {}).get("endpoint_url") or scoped.get("endpoint_url")
    return endpoint, region or scoped.get("region") or "us-east-1"


def _shared_config() -> tuple[dict[str, Any], dict[str, Any]]:
    """The profile's settings in the shared config file, and its `services` section (empty
    when there is no file, or the profile is not in it: credentials then say so)."""
    from pathlib import Path

    path = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
    if not Path(path).expanduser().is_file():
        return {}, {}
    try:
        import botocore.exceptions
        import botocore.session
    except ImportError:
        return {}, {}
    session = botocore.session.Session(session_vars=_session_variables())
    try:
        scoped = dict(session.get_scoped_config())
        name = scoped.get("services")
        services = session.full_config.get("services", {}).get(name, {}) if name else {}
    except botocore.exceptions.BotoCoreError:
        return {}, {}
    return scoped, services if isinstance(services, dict) else {}


class Client:
    """Requests to one bucket. `endpoint`: an S3-compatible store's URL (path-style addressing:
    such stores rarely resolve bucket subdomains), or None for AWS itself (virtual-hosted,
    unless the bucket's name cannot be a host name's label)."""

    def __init__(
        self,
        bucket: str,
        region: str,
        endpoint: str | None = None,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        connections: int = 32,
    ) -> None:
        import urllib3

        self.bucket = bucket
        self._endpoint = endpoint
        self._address(region)
        self._keys: tuple[str, str, str, bytes] | None = None  # (day, region, secret, key)
        self._skew = datetime.timedelta(0)  # the store's clock minus ours, once it said so
        timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        # Up to `connections` at once (a publish's reads go together); more are opened when
        # needed and closed after, never waited for.
        self._pool_args: dict[str, Any] = {"maxsize": connections, "timeout": timeout}
        # botocore's order: AWS_CA_BUNDLE, then REQUESTS_CA_BUNDLE, then certifi's bundle (as
        # botocore; it comes with PyGithub's requests), so a machine without a system store
        # verifies as it did with boto3
        bundle = os.environ.get("AWS_CA_BUNDLE") or os.environ.get("REQUESTS_CA_BUNDLE")
        if not bundle:
            try:
                import certifi

                bundle = certifi.where()
            except ImportError:
                bundle = None  # the system's store
        if bundle:
            self._pool_args["ca_certs"] = bundle
        self._proxy = _proxy_for(self._where.origin)
        self._pools: tuple[int, Any] | None = None

    @property
    def region(self) -> str:
        return self._where.region

    def _address(self, region: str) -> None:
        """Where requests go for `region` (on AWS the host names the region)."""
        if self._endpoint:
            parts = urlparse(self._endpoint)
            host = _host(parts.scheme, parts.netloc)
            origin = f"{parts.scheme}://{host}"
            path = f"{parts.path.rstrip('/')}/{self.bucket}"
        else:
            domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
            if not _HOST_LABEL.fullmatch(self.bucket):  # botocore's test: path-style then
                host, path = f"s3.{region}.{domain}", f"/{self.bucket}"
            else:
                host, path = f"{self.bucket}.s3.{region}.{domain}", ""
            origin = f"https://{host}"
        self._where = _Where(region, origin, host, path)
        self._https = origin.startswith("https:")

    def _pool(self) -> Any:
        """This process's connections: a forked child that inherited the client opens its own
        (two processes reading answers off one socket would mix them up)."""
        import urllib3

        pools = self._pools
        if pools is None or pools[0] != os.getpid():
            manager = (
                urllib3.ProxyManager(self._proxy, **self._pool_args)
                if self._proxy
                else urllib3.PoolManager(**self._pool_args)
            )
            pools = self._pools = (os.getpid(), manager)
        return pools[1]

    # --- operations ---------------------------------------------------------------------------

    def get(self, key: str, *, last_bytes: int | None = None) -> Response:
        headers = {"range": f"bytes=-{last_bytes}"} if last_bytes is not None else {}
        return self.request("GET", key, headers=headers)

    def head(self, key: str) -> Response:
        return self.request("HEAD", key)

    def put(
        self, key: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write `key`; its new ETag. Conditional: `if_none_match` (create only) or `if_match`
        (only over that ETag); a failed condition raises S3Error 412 (or 409 while another
        conditional write of the key is in flight)."""
        headers = {"content-type": "application/octet-stream"}
        if if_none_match:
            headers["if-none-match"] = "*"
        if if_match is not None:
            headers["if-match"] = if_match
        return self.request("PUT", key, headers=headers, body=body).headers.get("etag", "")

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self.request("DELETE", key, headers={} if if_match is None else {"if-match": if_match})

    def list(
        self, prefix: str, *, delimiter: str = "", start_after: str = "", page: int = 0
    ) -> Listing:
        """Every object under `prefix` (all pages, of `page` keys each when given), with its
        ETag; with a delimiter, the common prefixes too."""
        objects: dict[str, str] = {}
        prefixes: list[str] = []
        tokens: set[str] = set()
        # encoding-type=url: a key may hold characters that XML 1.0 cannot carry. The keys
        # come back form-encoded (a space as '+', a '+' as %2B), as botocore decodes them.
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if delimiter:
            query["delimiter"] = delimiter
        if start_after:
            query["start-after"] = start_after
        if page:
            query["max-keys"] = str(page)
        while True:
            body = self.request("GET", None, query=query).body
            try:
                root = _xml(body)
            except ET.ParseError as exc:
                detail = f"a listing that is not S3's XML: {exc}"
                raise S3Error(200, "InvalidResponse", detail) from None
            if _local(root.tag) == "Error":  # a 200 carrying an error is one all the same
                raise S3Error(200, _text(root, "Code") or "InvalidResponse", _text(root, "Message"))
            if _local(root.tag) != "ListBucketResult":
                detail = f"a listing that is not S3's: <{_local(root.tag)}>"
                raise S3Error(200, "InvalidResponse", detail)
            # A store may ignore encoding-type: keys are decoded only when it says it encoded
            # them (as botocore does), else a key's '+' would read as a space.
            decode = unquote_plus if _text(root, "EncodingType") == "url" else str
            for item in _children(root, "Contents"):
                objects[decode(_text(item, "Key"))] = _text(item, "ETag")
            found = _children(root, "CommonPrefixes")
            prefixes.extend(decode(_text(p, "Prefix")) for p in found)
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true":
                return Listing(objects, prefixes)
            if not token:  # more to list, and no way to ask for it: not a whole listing
                detail = "a listing cut short without a continuation token (ListObjectsV2?)"
                raise S3Error(200, "InvalidResponse", detail)
            if token in tokens:  # as botocore's paginator: else the same page, forever
                detail = f"the same continuation token twice: {token[:80]!r}"
                raise S3Error(200, "InvalidResponse", detail)
            tokens.add(token)
            query = {**query, "continuation-token": token}
            query.pop("start-after", None)

    # --- the wire -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        key: str | None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Send one request (retried as botocore's standard mode would); an error status
        raises S3Error, no answer at all S3Unreachable."""
        import urllib3

        query = query or {}
        canonical_query = "&".join(
            f"{quote(k, safe=_UNRESERVED)}={quote(v, safe=_UNRESERVED)}"
            for k, v in sorted(query.items())
        )
        # As botocore signs for S3: over TLS the body needs no hash of its own; over plain HTTP
        # it is signed, so a byte changed on the way is refused by the store.
        payload = _UNSIGNED if self._https else _EMPTY_SHA256 if not body else _sha256(body)
        corrected = False  # the region or the clock, once: then the answer stands
        attempt = 0
        while True:
            where = self._where  # one snapshot: another thread may correct the region
            path = quote(
                where.path + ("/" + key if key is not None else "/"), safe="/" + _UNRESERVED
            )
            target = path + ("?" + canonical_query if canonical_query else "")
            sent = self._sign(where, method, path, canonical_query, dict(headers or {}), payload)
            if body:
                sent["content-length"] = str(len(body))
            attempt += 1
            try:
                # The target goes to a pool of the origin as it is: a PoolManager given the
                # whole URL resolves its dot segments ('a/../b' would be 'b', not the key
                # signed). A forwarding proxy is asked with the whole URL (urllib3 still
                # resolves those there, as it does for botocore).
                forwarded = self._proxy is not None and not self._https
                raw = (
                    self._pool()
                    .connection_from_url(where.origin)
                    .urlopen(
                        method,
                        where.origin + target if forwarded else target,
                        body=body or None,
                        headers=sent,
                        redirect=False,
                        retries=False,
                        preload_content=True,
                        # the stored bytes, as botocore reads them: a Content-Encoding the
                        # object was stored with is not undone on the way
                        decode_content=False,
                        assert_same_host=False,
                    )
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt >= ATTEMPTS:
                    raise S3Unreachable(_why(exc, self._proxy)) from exc
                _backoff(attempt - 1)
                continue
            response = Response(
                raw.status, {k.lower(): v for k, v in raw.headers.items()}, raw.data
            )
            if response.status < 300 or (response.status == 304 and method == "GET"):
                return response
            error = _error(response, method)
            if not corrected and self._corrected(response, error, where.region):
                corrected = True
                continue
            if attempt < ATTEMPTS and (
                response.status in _RETRY_STATUS or error.code in _RETRY_CODES
            ):
                _backoff(attempt - 1)
                continue
            raise error

    def _corrected(self, response: Response, error: S3Error, signed_for: str) -> bool:
        """Put right what the store says this client got wrong, as botocore does: the bucket's
        region (named in `x-amz-bucket-region` when a request was signed for another), or the
        clock (RequestTimeTooSkewed: the store's Date says by how much). Whether to ask again.
        `signed_for`: the region the refused request was signed for (requests of other
        threads, in flight when the first refusal moved the client, are asked again too)."""
        region = response.headers.get("x-amz-bucket-region")
        if region and region != signed_for and response.status in (301, 307, 400, 403):
            if region != self.region:
                self._address(region)
            return True
        date = response.headers.get("date")
        if error.code == "RequestTimeTooSkewed" and date:
            import email.utils

            try:
                theirs = email.utils.parsedate_to_datetime(date)
            except (TypeError, ValueError):
                return False
            self._skew = theirs - datetime.datetime.now(datetime.UTC)
            return True
        return False

    def _sign(
        self,
        where: _Where,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        payload: str,
    ) -> dict[str, str]:
        """`headers` with SigV4's date, payload hash, token and Authorization added. Every
        header sent is signed, except content-length (signing it gains nothing)."""
        access, secret, token = credentials()
        now = datetime.datetime.now(datetime.UTC) + self._skew
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers["host"] = where.host
        headers["x-amz-date"] = stamp
        headers["x-amz-content-sha256"] = payload
        if token:
            headers["x-amz-security-token"] = token
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names),
                signed,
                payload,
            ]
        )
        scope = f"{day}/{where.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{_sha256(canonical.encode())}"
        key = self._signing_key(day, where.region, secret)
        signature = hmac.new(key, to_sign.encode(), "sha256")
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature.hexdigest()}"
        )
        # Sent as signed (urllib3 would send its own spelling of the URL's host otherwise).
        return headers

    def _signing_key(self, day: str, region: str, secret: str) -> bytes:
        cached = self._keys
        if cached is not None and cached[:3] == (day, region, secret):
            return cached[3]
        key = hmac.new(f"AWS4{secret}".encode(), day.encode(), "sha256").digest()
        for part in (region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), "sha256").digest()
        self._keys = (day, region, secret, key)
        return key


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(2.0, 0.1 * 2**attempt)))  # noqa: S311 (jitter, not a secret)


def _why(exc: BaseException, proxy: str | None = None) -> str:
    """The root of a connection failure, in a few words (naming the proxy when it is the
    proxy that could not be reached)."""
    import urllib3

    if isinstance(exc, urllib3.exceptions.ProxyError):
        return f"the proxy {proxy}: {_why(exc.original_error)}"
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    return text.split(": ", 1)[-1] if "Failed to establish" in text else text


_WORDS = {304: "NotModified", 403: "Forbidden", 404: "NotFound", 412: "PreconditionFailed"}


def _error(response: Response, method: str) -> S3Error:
    """The S3Error an error response describes (its XML body's Code and Message)."""
    code, message = _WORDS.get(response.status, str(response.status)), ""
    xml = False
    if response.body and method != "HEAD":
        try:
            root = _xml(response.body)
        except ET.ParseError:
            message = response.body[:200].decode("utf-8", "replace")
        else:
            code, message, xml = _text(root, "Code") or code, _text(root, "Message"), True
    location = response.headers.get("location")
    if location and 300 <= response.status < 400 and not (xml and message):
        # not followed (the signature is for here): where it points says what to fix
        message = f"redirected to {location}"
    return S3Error(response.status, code, message)


def _xml(body: bytes) -> ET.Element:
    """An S3 XML answer. S3 never sends a document type, so one is refused before parsing:
    no entity of a hostile or broken endpoint is ever expanded."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ET.ParseError("an S3 answer with a document type")
    return ET.fromstring(body)  # noqa: S314 (no DOCTYPE, so no entities: checked above)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # S3's namespace, where the store gives one


def _children(root: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in root if _local(child.tag) == name]


def _text(root: ET.Element, name: str) -> str:
    for child in root:
        if _local(child.tag) == name:
            return child.text or ""
    return ""


def _proxy_for(url: str) -> str | None:
    """The HTTP(S)_PROXY that applies to `url`, honouring NO_PROXY, as botocore would."""
    import urllib.request

    parts = urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    # host:port, as botocore asks: NO_PROXY entries match it with or without their port
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return None
    # `host:port` is an http:// proxy (as botocore and curl read it; urllib3 refuses it)
    if "://" not in proxy:
        proxy = "http:" + proxy if proxy.startswith("//") else "http://" + proxy
    return proxy


def _host(scheme: str, netloc: str) -> str:
    """The Host header of an endpoint, as HTTP sends it and botocore signs it: lower-cased,
    without a user, without its scheme's default port."""
    parts = urlparse(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:  # not a port: urllib3 says so when the request is sent
        return netloc.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    default = {"http": 80, "https": 443}.get(scheme)
    return host if port is None or port == default else f"{host}:{port}"
