"""The ASGI application of `serve`: routes of the Open Inference Protocol v2, `/metrics`, and the
lifespan (load on start, drain and flush the prediction log on stop).

A plain ASGI callable, no framework: a request costs a path split, the protocol's parse, one
`session.run` and the encode, inline on the event loop; a large one runs on a thread beside the
loop, and its JSON is decoded and encoded in a child process (`offload`). Metrics and the
prediction log wrap the call to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from mlops_ci import __version__
from mlops_ci.serve import defaults, protocol
from mlops_ci.serve.defaults import DEFAULTS
from mlops_ci.serve.metrics import Metrics
from mlops_ci.serve.models import LoadedModel, ModelStore
from mlops_ci.serve.offload import CodecProcess
from mlops_ci.serve.predlog import PredictionLog
from mlops_ci.serve.protocol import ProtocolError
from mlops_ci.triton import PLATFORM

log = logging.getLogger("mlops_ci.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

EXTENSIONS = ["binary_tensor_data", "model_repository_health"]
_JSON = [(b"content-type", b"application/json")]
_NOT_READY = protocol.error_body("the server is loading its models")
_INTERNAL = protocol.error_body("internal error; the server's log has the details")
#: The endpoints outside /v2/models/, all GET (and HEAD).
_FIXED = frozenset({"/v2/health/live", "/v2/health/ready", "/v2", "/v2/", "/metrics"})
_READ = "GET, HEAD"
#: Request bodies longer than this run on a thread, and their JSON (the request's, a reply's of
#: about as many bytes) is decoded and encoded in the worker's child process (`offload`): not on
#: the event loop. Decoding JSON costs about 12 ms a MB: a 48 MB body held the loop for
#: seconds, and every other request of the worker (health probes too) waited. Below this a
#: request holds the loop for a few milliseconds at most, and the child's round trip (about
#: 1 ms) would be a large share of its latency: it stays inline.
LARGE_BODY_BYTES = 256 << 10
#: Large requests between decode and encode at once, per worker (`App._turns`).
LARGE_TURNS = 2
#: The bodies of large requests a worker holds at once, being read, waiting for a turn or in
#: one, in --max-body-mb's (a body whose length is not declared counts as the limit): a request
#: past it is answered 503 before its body is read. Without it every connection could hold a
#: whole body while the turns are taken (a hundred of them, 6.4 GB at 64 MB each).
LARGE_BODIES = 4
_NO_TURN = contextlib.nullcontext()
_T = TypeVar("_T")


@dataclass(frozen=True)
class Settings:
    """What a server process needs to start (passed to worker processes as JSON)."""

    registry: str
    prediction_log: str | None  # None: <registry>/.mlops/predictions; "": off
    max_body_bytes: int = defaults.max_body_bytes(DEFAULTS.max_body_mb)
    poll_s: float = DEFAULTS.poll_s
    threads: int = DEFAULTS.threads
    version_cache: int = DEFAULTS.version_cache
    default_sample_rate: float = DEFAULTS.sample_rate
    log_flush_s: float = DEFAULTS.log_flush_s
    body_timeout_s: float = defaults.body_timeout_s(DEFAULTS.idle_timeout_s)
    metrics_dir: str | None = None  # --workers N: the folder where workers share their counters


class App:
    """The ASGI callable. `store` and `predlog` exist once the lifespan has started."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        shared = None
        if settings.metrics_dir is not None:
            from mlops_ci.serve.shared_counters import SharedCounters

            shared = SharedCounters(settings.metrics_dir)
        self.metrics = Metrics(shared)
        self.store: ModelStore | None = None
        self.predlog: PredictionLog | None = None
        # Large requests take turns (`_turns`); small ones no longer wait for them.
        # onnxruntime lets go of the GIL while it runs.
        self._codec = CodecProcess()
        self._large: ThreadPoolExecutor | None = None
        # Held from a large body's decode to its reply's encode. The child and the thread are
        # queues: without turns, each reply's encode queued in the child behind every large body
        # that had arrived meanwhile, so a burst was decoded whole (its arrays and its outputs
        # all at once) before the first reply went out. Two: one decoded while one is run or
        # encoded, so the child still works while the model runs.
        self._turns = asyncio.Semaphore(LARGE_TURNS)
        #: the bytes of the large bodies admitted and not yet answered (`LARGE_BODIES`)
        self._large_bytes = 0

    # --- lifespan ------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.start)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> None:
        from mlops_ci.registry import open_registry

        s = self.settings
        registry = open_registry(s.registry)
        log_on = s.prediction_log != ""
        store = ModelStore(
            registry,
            self.metrics,
            threads=s.threads,
            default_sample_rate=s.default_sample_rate,
            log_enabled=log_on,
            version_cache=s.version_cache,
        )
        if log_on:
            if s.prediction_log is None:
                from mlops_ci.serve.predlog import REGISTRY_PREFIX

                sink, prefix = registry, REGISTRY_PREFIX
            else:
                sink, prefix = open_registry(s.prediction_log), ""
            self.predlog = PredictionLog(sink, prefix, self.metrics, flush_s=s.log_flush_s)
        self.store = store
        store.start(s.poll_s)
        if self.metrics.shared is not None:
            self.metrics.shared.start(self.metrics.snapshot)

    def stop(self) -> None:
        if self.store is not None:
            self.store.stop()
        self._codec.close()
        if self._large is not None:
            self._large.shutdown(wait=False, cancel_futures=True)
        if self.predlog is not None:
            self.predlog.close()
        if self.metrics.shared is not None:  # last: the prediction log's final rows count too
            self.metrics.shared.stop(self.metrics.snapshot)

    # --- HTTP ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path.startswith("/v2/models/"):
                await self._model_route(scope, path[11:].split("/"), method, receive, send)
            elif path not in _FIXED:  # before the method: 405 says the resource exists
                raise ProtocolError(f"no such endpoint: {path}", 404)
            elif method not in ("GET", "HEAD"):
                raise ProtocolError(f"{method} is not allowed on {path}", 405, allow=_READ)
            elif path == "/v2/health/live":
                await _reply(send, 200, b"")
            elif path == "/v2/health/ready":
                ready = self.store is not None and self.store.ready
                await _reply(send, 200 if ready else 503, b"" if ready else _NOT_READY)
            elif path in ("/v2", "/v2/"):
                doc = {"name": "mlops-ci", "version": __version__, "extensions": EXTENSIONS}
                await _reply(send, 200, protocol.json_bytes(doc))
            elif path == "/metrics":
                await _reply(
                    send,
                    200,
                    self.metrics.exposition(),
                    [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                )
        except ProtocolError as exc:
            # RFC 9110 §15.5.6: a 405 names the methods the resource takes.
            headers = _JSON if exc.allow is None else [*_JSON, (b"allow", exc.allow.encode())]
            await _reply(send, exc.status, protocol.error_body(exc.message), headers)
        except Exception:
            # A bug, not the client's doing: still the error object every client parses (not
            # uvicorn's text/plain 500), and the traceback once, in the server's log.
            log.exception("%s %s failed", method, path)
            await _reply(send, 500, _INTERNAL)

    async def _model_route(
        self, scope: Scope, parts: list[str], method: str, receive: Receive, send: Send
    ) -> None:
        # parts: [m] | [m, ready] | [m, infer] | [m, versions, v] | [m, versions, v, ready|infer]
        store = self.store
        if store is None or not store.ready:
            raise ProtocolError("the server is loading its models", 503)
        version: str | None = None
        if len(parts) >= 3 and parts[1] == "versions":
            version = parts[2]
            rest = parts[3:]
        else:
            rest = parts[1:]
        if len(rest) > 1 or (rest and rest[0] not in ("ready", "infer")) or not parts[0]:
            raise ProtocolError(f"no such endpoint: {scope['path']}", 404)
        action = rest[0] if rest else ""
        name = parts[0]
        allow = "POST" if action == "infer" else _READ
        if method not in allow.split(", "):
            store.check(name, version)  # an unknown model or version is 404, whatever the method
            raise ProtocolError(f"{method} is not allowed here; use {allow}", 405, allow=allow)
        if action == "infer":
            await self._infer(scope, store, name, version, receive, send)
            return
        model = _model(store, name, version) or await _load(store, name, version)
        if action == "ready":
            await _reply(send, 200, b"")
        else:
            await _reply(send, 200, protocol.json_bytes(_metadata(model, store)))

    async def _infer(
        self,
        scope: Scope,
        store: ModelStore,
        name: str,
        version: str | None,
        receive: Receive,
        send: Send,
    ) -> None:
        header_length: int | None = None
        declared: int | None = None
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                header_length = _int_header(value, "Inference-Header-Content-Length")
            elif key == b"content-length":
                declared = _int_header(value, "Content-Length")
            elif key == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                # tritonclient's request_compression_algorithm: read as it is, a gzip body was
                # refused for a wrong header length or as invalid JSON (RFC 9110 §15.5.16).
                raise ProtocolError(
                    f"Content-Encoding {value.decode('latin-1')!r} is not supported; "
                    "send the body uncompressed",
                    415,
                )
        limit = self.settings.max_body_bytes
        if declared is not None and declared > limit:
            raise ProtocolError(f"the body is {declared} bytes; the limit is {limit}", 413)
        model = _model(store, name, version) or await _load(store, name, version)
        expected = limit if declared is None else declared
        if expected <= LARGE_BODY_BYTES:
            await self._infer_body(model, header_length, receive, send)
            return
        if self._large_bytes and self._large_bytes + expected > LARGE_BODIES * limit:
            raise ProtocolError("this server is busy with large requests; retry later", 503)
        self._large_bytes += expected
        try:
            await self._infer_body(model, header_length, receive, send)
        finally:
            self._large_bytes -= expected

    async def _infer_body(
        self, model: LoadedModel, header_length: int | None, receive: Receive, send: Send
    ) -> None:
        body = await _read_body(receive, self.settings.max_body_bytes, self.settings.body_timeout_s)
        # A large body off the loop (LARGE_BODY_BYTES); the sampler and the counters stay on it.
        # Only JSON goes to the child: the binary extension's data is a view of the body here,
        # and copied to the child and back it made a 48 MB binary request 12 times slower (and
        # held 4 more copies) for no shorter stall of the loop.
        large = len(body) > LARGE_BODY_BYTES
        json_part = len(body) if header_length is None else min(max(header_length, 0), len(body))
        decode_in_child = json_part > LARGE_BODY_BYTES
        started = time.perf_counter()  # the wait for a turn counts, as the child's queue did
        # A large request's client may leave while it waits for its turn (its own timeout, a
        # retry elsewhere): its body is then not decoded, run and encoded for nobody. Once the
        # whole body is in, what `receive` gives next is the disconnect.
        gone: asyncio.Future[Any] | None = asyncio.ensure_future(receive()) if large else None
        try:
            async with self._turns if large else _NO_TURN:
                try:
                    if _left(gone):
                        self.metrics.abandoned += 1
                        return
                    if decode_in_child:
                        request = await self._codec.decode(
                            body, header_length, model.inputs, model.outputs
                        )
                    elif large:
                        # Binary numbers are a view of the body, but BYTES elements are split
                        # one by one in Python: on the loop, 57 MB of them held every probe
                        # 3.5 to 5.7 s. On the thread the loop still gets the GIL every few ms.
                        request = await self._off_loop(
                            protocol.parse_request, body, header_length, model.inputs, model.outputs
                        )
                    else:
                        request = protocol.parse_request(
                            body, header_length, model.inputs, model.outputs
                        )
                    if _left(gone):  # left while its body was decoded
                        self.metrics.abandoned += 1
                        return
                    # The log holds every output: a sampled request computes them all in its
                    # one run, and the reply takes those asked for. (A request that then fails
                    # has used its turn.)
                    log_to = self.predlog if model.sampler is not None and model.sampler() else None
                    names = (
                        [m.name for m in model.outputs]
                        if log_to is not None
                        else [n for n, _ in request.outputs]
                    )
                    if large:
                        results = await self._off_loop(_run, model, names, request.inputs)
                    else:
                        results = _run(model, names, request.inputs)
                    outputs = [(n, results[n], b) for n, b in request.outputs]
                    if large and _json_values(outputs) * _JSON_BYTES_A_VALUE > LARGE_BODY_BYTES:
                        reply, json_length = await self._codec.encode(
                            model.name, model.version_text, request.id, outputs
                        )
                    elif large:  # binary BYTES outputs are joined one by one, as above
                        reply, json_length = await self._off_loop(
                            protocol.encode_response,
                            model.name,
                            model.version_text,
                            request.id,
                            outputs,
                        )
                    else:
                        reply, json_length = protocol.encode_response(
                            model.name, model.version_text, request.id, outputs
                        )
                except ProtocolError:
                    model.stats.failed()
                    raise
                except Exception as exc:  # onnxruntime refusing what the checks let through
                    model.stats.failed()
                    raise ProtocolError(f"inference failed: {_first_line(exc)}", 400) from None
        finally:
            if gone is not None:
                gone.cancel()
        first = next(iter(request.inputs.values()), None)
        model.stats.ok(
            time.perf_counter() - started,
            int(first.shape[0]) if first is not None and first.ndim else 1,
        )
        if log_to is not None:
            log_to.record(
                model.name, model.version, request.id, model.layout, request.inputs, results
            )
        headers = _JSON
        if json_length is not None:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
            ]
        await _reply(send, 200, reply, headers)

    async def _off_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._large is None:
            self._large = ThreadPoolExecutor(1, thread_name_prefix="large-requests")
        return await asyncio.get_running_loop().run_in_executor(self._large, fn, *args)


#: About how many bytes of JSON a number of a reply takes (a float32 is 8 to 12).
_JSON_BYTES_A_VALUE = 8


def _json_values(outputs: list[tuple[str, Any, bool]]) -> int:
    """How many values a reply writes as JSON (outputs not asked for as binary data)."""
    return sum(int(array.size) for _, array, binary in outputs if not binary)


def _run(model: LoadedModel, names: list[str], inputs: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(names, model.session.run(names, inputs), strict=True))


async def _load(store: ModelStore, name: str, version: str | None) -> LoadedModel:
    """A published version not loaded: loaded off the event loop, one load shared by all the
    requests that wait for it (the rare path of _model)."""
    if version is None:
        raise ProtocolError(f"model {name!r} has no version that can serve", 503)
    # Shielded: one waiter's cancellation must not cancel the load the others wait for.
    return await asyncio.shield(asyncio.wrap_future(store.load(name, version)))


def _model(store: ModelStore, name: str, version: str | None) -> LoadedModel | None:
    """The model version, or None when it is listed but must be loaded first (`_load`)."""
    try:
        return store.get(name, version)
    except ProtocolError as exc:
        if exc.status != 503 or version is None:
            raise
    return None


def _metadata(model: LoadedModel, store: ModelStore) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(v) for v in store.versions(model.name)],
        "platform": PLATFORM,
        "inputs": [m.to_json() for m in model.inputs],
        "outputs": [m.to_json() for m in model.outputs],
    }


def _left(gone: asyncio.Future[Any] | None) -> bool:
    """Whether the watch on a request's `receive` (once its body is in) saw its client leave."""
    if gone is None or not gone.done() or gone.cancelled() or gone.exception() is not None:
        return False
    message = gone.result()
    return isinstance(message, dict) and message.get("type") == "http.disconnect"


async def _read_body(receive: Receive, limit: int, timeout_s: float) -> bytes:
    # A client that stops sending, half-way or before the first byte of its body (headers
    # only), must not hold the request for ever: the transport's timer stops at the headers.
    message = await _receive_within(receive, timeout_s)
    if message["type"] == "http.disconnect":
        raise ProtocolError("the client went away", 400)
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise ProtocolError(f"the body is over the limit of {limit} bytes", 413)
    if not message.get("more_body", False):
        return body  # the usual case: the whole body arrived with the headers
    chunks, size = [body], len(body)
    while True:
        message = await _receive_within(receive, timeout_s)
        if message["type"] == "http.disconnect":
            raise ProtocolError("the client went away", 400)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"the body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _receive_within(receive: Receive, timeout_s: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout_s):  # no task per call, unlike wait_for on 3.11
            return await receive()
    except TimeoutError:
        raise ProtocolError(f"the body did not arrive within {timeout_s:g} s", 408) from None


def _int_header(value: bytes, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(f"{name} must be a whole number") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


async def _reply(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = _JSON
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app() -> App:
    """uvicorn's factory for worker processes: the settings come from the environment."""
    import json
    import os
    import sys

    raw = os.environ.get("MLOPS_CI_SERVE_SETTINGS")
    if not raw:
        sys.exit("mlops-ci serve: MLOPS_CI_SERVE_SETTINGS is not set (start with `mlops-ci serve`)")
    logging.basicConfig(level=logging.INFO, format=f"mlops-ci serve [{os.getpid()}]: %(message)s")
    return App(Settings(**json.loads(raw)))
