"""Which model versions `serve` answers for: the registry's serving versions, kept current by a
poller, one onnxruntime session per version, loaded only from digest-checked bytes; other
published versions loaded by path into a small LRU cache.

Swaps are single dictionary assignments, so a request sees the old version or the new one, never
a mix; a version that fails to load (missing, half-written, wrong digest) is never served and
the version before it keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_ci import runtime
from mlops_ci.data import columns_from_onnx
from mlops_ci.serve.defaults import DEFAULTS
from mlops_ci.serve.metrics import Metrics, VersionStats
from mlops_ci.serve.predlog import Layout, Sampler, layout_for, sample_rate
from mlops_ci.serve.protocol import ONNX_DATATYPES, ProtocolError, TensorMeta

if TYPE_CHECKING:
    from mlops_ci.registry import Registry

log = logging.getLogger("mlops_ci.serve")


@dataclass(frozen=True)
class LoadedModel:
    """One model version, ready: its session, its signature and its bound metrics."""

    name: str
    version: int
    session: Any = field(repr=False)
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    stats: VersionStats = field(repr=False)
    sampler: Sampler | None = field(repr=False)
    layout: Layout = field(repr=False)
    #: the digest its release.json named when it was loaded: version numbers are never reused
    #: in a registry, but a registry can be replaced under a running server
    onnx_sha256: str = field(default="", repr=False)

    @property
    def version_text(self) -> str:
        return str(self.version)


@dataclass(frozen=True)
class _ModelState:
    token: str
    serving: LoadedModel | None
    versions: tuple[int, ...]
    #: the listing `versions` came from (numbered folders, marked ones): while neither it nor
    #: the token changes, the versions are taken as they were, not asked of the log again
    #: (when a folder was left out, again after RECHECK_S: its record may have landed since)
    listing: tuple[tuple[int, ...], frozenset[int]] = ((), frozenset())
    checked: float = 0.0  # time.monotonic() of that reading


#: How long a version left out as unrecorded stays left out without asking the log again.
RECHECK_S = 60.0


class ModelStore:
    """The registry's models as served: `get(model, version)` on the request path; `refresh()`
    (called by the poller thread) picks up deploys and rollbacks."""

    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        *,
        threads: int = DEFAULTS.threads,
        default_sample_rate: float = DEFAULTS.sample_rate,
        log_enabled: bool = True,
        version_cache: int = DEFAULTS.version_cache,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.threads = threads
        self.version_cache = version_cache
        self.default_sample_rate = default_sample_rate
        self.log_enabled = log_enabled
        self.ready = False
        self._models: Mapping[str, _ModelState] = {}
        # Published versions other than the serving ones, loaded by path (or serving until a
        # deploy or rollback), least recently used first: at most `version_cache`, so a client
        # walking through versions cannot make a worker hold a session for each.
        self._cache: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        # Loads by path under way: the requests that ask for one version meanwhile share one.
        self._loading: dict[tuple[str, int], Future[LoadedModel]] = {}
        self._lock = threading.Lock()  # guards the two above; never held while loading
        # One version loaded by path at a time: a worker holds at most one session beyond the
        # cache and the serving versions, however many clients ask for others at once.
        self._loader: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the request path ---------------------------------------------------------------------

    def versions(self, model: str) -> tuple[int, ...]:
        state = self._models.get(model)
        if state is None:
            raise ProtocolError(f"unknown model {model!r}", 404)
        return state.versions

    def check(self, model: str, version: str | None = None) -> None:
        """ProtocolError 404 unless the model, and the version when given, are published."""
        versions = self.versions(model)
        if version is not None and _version_number(model, version) not in versions:
            raise ProtocolError(f"model {model!r} has no version {version}", 404)

    def get(self, model: str, version: str | None = None) -> LoadedModel:
        """The serving version, or a listed version already loaded; ProtocolError 404 when the
        model or version is unknown, 503 when it is known but not loaded (`load` it)."""
        state = self._models.get(model)
        if state is None:
            raise ProtocolError(f"unknown model {model!r}", 404)
        if version is None:
            if state.serving is None:
                raise ProtocolError(f"model {model!r} has no version that can serve", 503)
            return state.serving
        n = _version_number(model, version)
        if state.serving is not None and state.serving.version == n:
            return state.serving
        if n not in state.versions:
            raise ProtocolError(f"model {model!r} has no version {version}", 404)
        key = (model, n)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)  # the most recently used
        if found is None:
            raise ProtocolError(f"model {model!r} version {n} is not loaded", 503)
        return found

    def load(self, model: str, version: str) -> Future[LoadedModel]:
        """A published version by path, as a future: at once when it is loaded, else the load
        under way for it, else a new one on the loader thread. It fails with ProtocolError 404
        when the version is not published (or stops being so while it loads), 503 when it
        cannot be loaded (its digest, say)."""
        n = _version_number(model, version)
        state = self._models.get(model)
        if state is None or n not in state.versions:
            raise ProtocolError(f"model {model!r} has no version {version}", 404)
        key = (model, n)
        with self._lock:
            found = self._cache.get(key)
            if found is None and state.serving is not None and state.serving.version == n:
                found = state.serving  # it became the serving version meanwhile
            if found is not None:
                done: Future[LoadedModel] = Future()
                done.set_result(found)
                return done
            future = self._loading.get(key)
            if future is None or future.cancelled():
                if self._loader is None:
                    self._loader = ThreadPoolExecutor(1, thread_name_prefix="version-loader")
                future = self._loading[key] = self._loader.submit(self._load_by_path, key)
            return future

    def loaded(self) -> list[tuple[str, int]]:
        """The versions loaded by path (not serving), least recently used first."""
        with self._lock:
            return list(self._cache)

    def _load_by_path(self, key: tuple[str, int]) -> LoadedModel:
        model, n = key
        try:
            loaded = self._build(model, n)
        except Exception as exc:
            with self._lock:
                del self._loading[key]  # the next request tries again
            log.error("could not load %s version %s: %s", model, n, exc)
            raise ProtocolError(f"model {model!r} version {n} cannot be loaded", 503) from None
        with self._lock:
            del self._loading[key]
            state = self._models.get(model)
            if state is None or n not in state.versions:  # unpublished while it loaded
                raise ProtocolError(f"model {model!r} has no version {n}", 404)
            self._keep(key, loaded)
        return loaded

    def _keep(self, key: tuple[str, int], loaded: LoadedModel) -> None:
        """Cache a non-serving version as the most recently used; evict beyond the bound.
        Called with the lock held. An evicted session is freed once the requests using it end."""
        self._cache[key] = loaded
        self._cache.move_to_end(key)
        while len(self._cache) > self.version_cache:
            self._cache.popitem(last=False)
            self.metrics.version_evictions += 1

    # --- keeping current -----------------------------------------------------------------------

    def refresh(self, *, full: bool = False, list_models: bool = True) -> None:
        """One look at the registry: changed `config.pbtxt` files (a deploy or a rollback), and
        with `list_models` new and removed models. `full` also re-lists every model's versions."""
        current = dict(self._models)
        names = self.registry.models() if list_models or full else list(current)
        changed = False
        replaced: list[LoadedModel] = []  # loaded versions whose bytes were replaced
        for gone in set(current) - set(names):
            del current[gone]
            changed = True
        for name in names:
            before = current.get(name)
            token = self.registry.state_token(name)
            if before is not None and before.token == token and not full:
                continue
            recheck = before is not None and before.token != token
            state = self._state(name, token, before, replaced if recheck else None)
            if state != before:
                current[name] = state
                changed = True
        if changed:
            before_all, self._models = self._models, current  # requests see before or after
            listed = {(m, n) for m, s in current.items() for n in s.versions}
            serving = {(m, s.serving.version) for m, s in current.items() if s.serving}
            with self._lock:
                for key in list(self._cache):  # unpublished, or serving now
                    if key not in listed or key in serving:
                        del self._cache[key]
                for name, before in before_all.items():
                    # A version that stopped serving and is still published stays loaded for a
                    # while, as the most recently used by path: a rollback to it is instant.
                    if before.serving is None or any(before.serving is r for r in replaced):
                        continue
                    key = (name, before.serving.version)
                    if key in listed and key not in serving:
                        self._keep(key, before.serving)

    def _state(
        self,
        name: str,
        token: str,
        before: _ModelState | None,
        replaced: list[LoadedModel] | None = None,
    ) -> _ModelState:
        """The model's state as the registry has it now. With `replaced` (its config.pbtxt
        changed), a loaded version whose release.json names other bytes now (the registry was
        replaced under the server: a new version 1, say) is loaded again, or dropped from the
        cache of versions by path, and added to `replaced`."""
        try:
            folders = self.registry.version_folders(name)
            listing = (tuple(folders.numbers), folders.marked)
            checked = time.monotonic()
            if (
                before is not None
                and before.token == token
                and before.listing == listing
                and (before.versions == listing[0] or checked - before.checked < RECHECK_S)
            ):
                versions, checked = before.versions, before.checked  # as read then
            else:
                versions = tuple(self.registry.published(name, folders))
            n = self.registry.serving_version(name)
            if replaced is not None:
                self._drop_replaced(name)
        except Exception as exc:
            log.error("%s: cannot read the registry: %s", name, exc)
            return before or _ModelState(token, None, ())
        serving = before.serving if before else None
        if serving is not None and replaced is not None and not self._current(serving):
            replaced.append(serving)
            log.info("%s: version %s has other bytes now; loading it again", name, serving.version)
            serving = None  # loaded again below, or dropped when it is no version any more
            if n is None or n not in versions:
                return _ModelState(token, None, versions, listing, checked)
        if n is not None and n in versions and (serving is None or serving.version != n):
            try:
                serving = self._load_serving(name, n)
                log.info("%s: serving version %s", name, n)
            except Exception as exc:
                # Keep what serves; the next change of config.pbtxt tries again.
                kept = ", keeping the one before" if serving is not None else ""
                log.error("%s: cannot load version %s%s: %s", name, n, kept, exc)
        elif n is None or n not in versions:
            log.error("%s: config.pbtxt names version %s, which is not published", name, n)
            if serving is not None and serving.version not in versions:
                serving = None
        return _ModelState(token, serving, versions, listing, checked)

    def _current(self, loaded: LoadedModel) -> bool:
        """Whether the loaded version's release.json still names the bytes it was loaded from
        (a release.json that cannot be read now says nothing: what serves keeps serving)."""
        try:
            release = self.registry.find_release(loaded.name, loaded.version) or {}
        except Exception as exc:
            log.error("%s: cannot read version %s: %s", loaded.name, loaded.version, exc)
            return True
        return (release.get("onnx") or {}).get("sha256") == loaded.onnx_sha256

    def _drop_replaced(self, name: str) -> None:
        """Drop the model's versions loaded by path whose bytes were replaced (one small read
        each: at most `version_cache`)."""
        with self._lock:
            cached = [loaded for key, loaded in self._cache.items() if key[0] == name]
        stale = [loaded for loaded in cached if not self._current(loaded)]
        with self._lock:
            for loaded in stale:
                if self._cache.get((name, loaded.version)) is loaded:
                    del self._cache[name, loaded.version]

    def _load_serving(self, name: str, n: int) -> LoadedModel:
        """The version about to serve: taken out of the cache when loaded by path (or waited for
        when a request is loading it), else loaded here, on the poller's thread."""
        key = (name, n)
        with self._lock:
            found = self._cache.pop(key, None)
            pending = self._loading.get(key)
        if found is None and pending is not None:
            with contextlib.suppress(Exception):  # then loaded below, its error logged there
                found = pending.result()
            with self._lock:
                self._cache.pop(key, None)
        return found if found is not None else self._build(name, n)

    def _build(self, name: str, n: int) -> LoadedModel:
        import yaml

        release = self.registry.release(name, n)
        data = self.registry.model_onnx(name, n, release)  # sha256 checked against release.json
        try:
            manifest = yaml.safe_load(self.registry.manifest_text(name, n))
        except Exception:
            manifest = None  # serving needs no manifest; the log then uses the defaults
        options = runtime.options()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Spinning threads burn a core between requests; a server has other work for it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = runtime.session(data, options)
        with self._lock:
            self.metrics.version_loads += 1
        inputs = tuple(_meta(t) for t in session.get_inputs())
        outputs = tuple(_meta(t) for t in session.get_outputs())
        rate = sample_rate(manifest, self.default_sample_rate) if self.log_enabled else 0.0
        layout = layout_for(
            manifest if isinstance(manifest, dict) else None,
            inputs,
            outputs,
            columns_from_onnx(session),
        )
        if rate > 0 and layout.problem is not None:
            log.error("%s version %s: no prediction log: %s", name, n, layout.problem)
            rate = 0.0
        return LoadedModel(
            name=name,
            version=n,
            session=session,
            inputs=inputs,
            outputs=outputs,
            stats=self.metrics.stats(name, str(n)),
            sampler=Sampler(rate) if rate > 0 else None,
            layout=layout,
            onnx_sha256=release["onnx"]["sha256"],  # what model_onnx checked the bytes against
        )

    def start(self, poll_s: float) -> None:
        """Load what serves now (blocking), then follow the registry every `poll_s` seconds."""
        self.refresh(full=True)
        self.ready = True
        self._thread = threading.Thread(
            target=self._poll, args=(poll_s,), name="registry-poller", daemon=True
        )
        self._thread.start()

    def _poll(self, poll_s: float) -> None:
        # Each round reads one small stamp per model. Listing the models (a walk of the whole
        # registry) comes every third round, re-listing every model's versions every tenth: a
        # version folder can vanish without any change to config.pbtxt.
        rounds = 0
        while not self._stop.wait(poll_s):
            rounds += 1
            try:
                self.refresh(full=rounds % 10 == 0, list_models=rounds % 3 == 0)
            except Exception as exc:  # a flaky store must not stop the poller
                log.error("registry poll failed: %s", exc)
                time.sleep(poll_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._loader is not None:
            self._loader.shutdown(wait=False, cancel_futures=True)


def _version_number(model: str, version: str) -> int:
    # ASCII only: str.isdigit() is also true of "²" (which int() refuses: a 500) and of "١"
    # (which int() reads as 1: an alias of version 1 nobody published).
    if not (version.isascii() and version.isdigit()) or len(version) > 18:
        raise ProtocolError(f"model {model!r} has no version {version!r}", 404)
    return int(version)


def _meta(node: Any) -> TensorMeta:
    datatype = ONNX_DATATYPES.get(node.type)
    if datatype is None:
        raise ValueError(f"{node.name}: onnx type {node.type} is not supported by the protocol")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorMeta(node.name, datatype, shape)
