"""The catalog's data model: every fact the site and catalog.json show, as frozen dataclasses.

`read.py` fills it from a registry; `site.py` renders it. Nothing here does I/O, so tests and the
benchmark can build a catalog from fixtures.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

#: The model states the index filters on, most urgent first.
STATES = ("attention", "warning", "ok", "unmonitored", "not deployed", "removed")
_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


_CONVERTERS: dict[type, Any] = {}
_SCALARS = (str, int, float, bool, type(None))


def _converter(kind: type) -> Any:
    """A function turning one instance of the dataclass `kind` into a dict: generated once per
    class, so converting a field is one attribute read, not a loop over `fields()`."""
    names = [f.name for f in dataclasses.fields(kind)]
    body = ", ".join(f"{name!r}: plain(o.{name})" for name in names)
    scope: dict[str, Any] = {"plain": plain}
    exec(f"def convert(o):\n    return {{{body}}}\n", scope)  # noqa: S102 - field names only
    return scope["convert"]


def plain(value: Any) -> Any:
    """`value` as JSON-ready dicts and lists (`dataclasses.asdict` without its deep copies,
    which cost more than the whole JSON encoding of a 10,000-model catalog)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    convert = _CONVERTERS.get(kind)
    if convert is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        convert = _CONVERTERS[kind] = _converter(kind)
    if convert is not None:
        return convert(value)
    if kind is tuple or kind is list:
        return [plain(item) for item in value] if value else []
    if isinstance(value, str | int | float):
        return value
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    return value


@dataclass(frozen=True)
class PullRequest:
    number: int | None
    url: str | None = None
    head_sha: str | None = None


@dataclass(frozen=True)
class Approver:
    login: str
    review_id: int | None = None
    commit: str | None = None
    time: str | None = None


@dataclass(frozen=True)
class Metric:
    """One metric threshold check of `mlops-ci test`, as recorded in a release."""

    name: str
    value: float | None
    min: float | None = None
    max: float | None = None
    passed: bool = True


@dataclass(frozen=True)
class Latency:
    """The ONNX model's latency at one batch size, from the release's bench results."""

    batch_size: int
    p50_ms: float | None
    p95_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None


@dataclass(frozen=True)
class Version:
    """One published registry version (`<model>/<n>/release.json`)."""

    number: int
    semver: str
    time: str | None = None
    commit: str | None = None
    source: str | None = None
    pull_request: PullRequest | None = None
    approvers: tuple[Approver, ...] = ()
    test_passed: bool | None = None
    bench_passed: bool | None = None
    metrics: tuple[Metric, ...] = ()
    latency: tuple[Latency, ...] = ()
    run_url: str | None = None
    onnx_sha256: str | None = None
    artifact_sha256: str | None = None
    #: sha256 of the release's own audit record (the log's anchor in the release).
    audit_sha256: str | None = None

    @property
    def p50_ms(self) -> float | None:
        """p50 at the smallest measured batch size: the number a caller of one row feels."""
        return min(self.latency, key=lambda m: m.batch_size).p50_ms if self.latency else None


@dataclass(frozen=True)
class Event:
    """One audit record of the model: deploy, rollback, refused or smoke-failed."""

    time: str
    action: str
    version: str | None = None
    registry_version: int | None = None
    actor: str | None = None
    commit: str | None = None
    pull_request: PullRequest | None = None
    approvers: tuple[str, ...] = ()
    reason: str | None = None
    source: str | None = None
    run_url: str | None = None


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    test: str | None
    statistic: float | None
    threshold: float | None
    drifted: bool


@dataclass(frozen=True)
class MonitorRun:
    """One monitor verdict file (`.mlops/monitor/<model>/<time>.json`)."""

    time: str
    version: str | None
    needs_attention: bool
    stale: bool
    #: In the warning window before the refresh deadline.
    stale_warning: bool = False
    stale_detail: str | None = None
    drift_share: float | None = None
    #: The share of drifted columns at which the monitor declares dataset drift.
    share_threshold: float | None = None
    dataset_drift: bool = False
    columns: tuple[ColumnDrift, ...] = ()
    prediction_drift: bool | None = None
    decay: bool | None = None

    @cached_property
    def drifted_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.drifted)


@dataclass(frozen=True)
class Served:
    """An interval during which one registry version served; `end` None means it still does."""

    number: int
    semver: str | None
    start: str
    end: str | None = None


@dataclass(frozen=True)
class Model:
    """One model. Its derived facts (`state`, `release`, `page`, ...) are cached on first use:
    the index, the page, catalog.json and the counts each ask for them (a cached_property
    writes the instance's __dict__, which a frozen dataclass allows; fields stay immutable)."""

    name: str
    owners: tuple[str, ...] = ()
    risk: str | None = None
    description: str | None = None
    serving: int | None = None
    serving_since: str | None = None
    versions: tuple[Version, ...] = ()
    events: tuple[Event, ...] = ()
    monitor: tuple[MonitorRun, ...] = ()
    served: tuple[Served, ...] = ()
    problems: tuple[str, ...] = ()
    #: Deployed once (the audit log says so), but its registry folder is gone: its history is
    #: the audit log's.
    removed: bool = False

    @cached_property
    def page(self) -> str:
        """File name of the model's page: its name when that is a safe file name, else a hash.

        Names come from folder names in the registry, which anyone with write access to it can
        choose; a page name must never escape `models/` or need escaping in a link. A folder
        name that is not UTF-8 reaches Python with surrogates in it, hashed as they are. The
        hash's page name holds "_", which no plain name does: a model named `model-<that hash>`
        (a valid name) must not get, and overwrite, another model's page.
        """
        if _SAFE_NAME.fullmatch(self.name):
            return f"{self.name}.html"
        import hashlib

        raw = self.name.encode("utf-8", "surrogatepass")
        return f"model_{hashlib.sha256(raw).hexdigest()[:16]}.html"

    @cached_property
    def release(self) -> Version | None:
        """The serving version's release record."""
        return next((v for v in self.versions if v.number == self.serving), None)

    @property
    def last_monitor(self) -> MonitorRun | None:
        return self.monitor[-1] if self.monitor else None

    @cached_property
    def key_metric(self) -> Metric | None:
        """The serving release's first metric on the whole evaluation data (not a slice): the
        first threshold the manifest declares, or a failing one, which `test` lists first."""
        release = self.release
        if release is None or not release.metrics:
            return None
        return next((m for m in release.metrics if "[" not in m.name), release.metrics[0])

    @cached_property
    def state(self) -> str:
        """One of STATES: what the index filters and colours on."""
        if self.removed:
            return "removed"
        if self.serving is None:
            return "not deployed"
        run = self.last_monitor
        if run is None:
            return "unmonitored"
        if run.needs_attention:
            return "attention"
        if run.drifted_columns or run.stale_warning:
            return "warning"
        return "ok"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = plain(self)
        doc["page"] = f"models/{self.page}"
        doc["state"] = self.state
        return doc


@dataclass(frozen=True)
class AuditState:
    """`audit verify` of the registry's log, as the catalog found it."""

    records: int
    ok: bool
    problem: str | None = None
    first_bad: int | None = None


@dataclass(frozen=True)
class Catalog:
    generated: str
    registry: str
    models: tuple[Model, ...] = ()
    audit: AuditState | None = None
    #: Things the reader could not use (an unreadable release, a bad monitor file), shown on the
    #: index so that a gap in the catalog is never silent.
    problems: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self, models: bool = True) -> dict[str, Any]:
        """catalog.json's document (`models` last; without them when `models` is false, for a
        writer that adds them piece by piece)."""
        doc: dict[str, Any] = {
            "catalog": 1,
            "generated": self.generated,
            "registry": self.registry,
            "audit": plain(self.audit),
            "problems": list(self.problems),
        }
        if models:
            doc["models"] = [m.to_json() for m in self.models]
        return doc
