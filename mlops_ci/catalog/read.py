"""Reads the catalog's facts from a registry: releases, manifests as deployed, the audit trail,
the monitor's verdicts, and (optionally) the model repository's manifests not yet deployed.

Every record is untrusted and may be malformed: a bad one becomes a listed problem, never a
crash, so one broken release cannot hide the other 9,999 models.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import stat
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import yaml

from mlops_ci.audit import HEAD_KEY, LOG_KEY
from mlops_ci.catalog.facts import (
    Approver,
    AuditState,
    Catalog,
    ColumnDrift,
    Event,
    Latency,
    Metric,
    Model,
    MonitorRun,
    PullRequest,
    Served,
    Version,
)
from mlops_ci.errors import MlopsCiError
from mlops_ci.manifest.paths import find_manifests
from mlops_ci.registry import VERSION_DIR, VERSION_FILES
from mlops_ci.report.units import finite

if TYPE_CHECKING:
    from mlops_ci.registry import Registry

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MONITOR_PREFIX = ".mlops/monitor/"
#: What a malformed record can raise while it is being read; anything else is a bug. JSON
#: nested deeper than Python's recursion limit (`[[[[…`) raises RecursionError as it is parsed.
_BAD_RECORD = (
    MlopsCiError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    RecursionError,
    yaml.YAMLError,
)


class RegistryView(Protocol):
    """The part of `mlops_ci.registry.Registry` the catalog reads (common.md's interface)."""

    def read_bytes(self, key: str) -> bytes | None: ...
    def read_log(self, key: str) -> bytes | None: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def model_keys(self) -> list[str]: ...
    def serving_version(self, model: str) -> int | None: ...
    def release(self, model: str, n: int) -> dict[str, Any]: ...
    def manifest_text(self, model: str, n: int) -> str: ...


# --- small tolerant converters --------------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# The converters below are called about 100 times per release: each tests the type JSON gives
# for a well-formed record first (`type(x) is str`, not an isinstance over a union).


def _str(value: Any) -> str | None:
    if type(value) is str:
        return value
    return None if value is None or isinstance(value, dict | list) else str(value)


def _int(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        return value
    if kind is bool:
        return None
    if isinstance(value, int):
        return int(value)
    # ASCII digits only: str.isdigit() also holds for "²" (which int() refuses) and "١٢"
    # (which it reads as 12), and a record's number is never written that way.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _fraction(value: Any) -> float | None:
    """A share (0 to 1), as the monitor writes the drifted columns' share and its threshold."""
    number = finite(value)
    return number if number is not None and 0 <= number <= 1 else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# The keys below are the ones deploy writes (DESIGN.md "Audit record" and "release.json"):
# `pull_request` {number, url, head_sha}, `approvers` [{login, review_id, commit, time}],
# `run_url`. A record in any other shape shows the fact as unknown, never a guess.


def pull_request(value: Any) -> PullRequest | None:
    if not isinstance(value, dict):
        return None
    number, url = _int(value.get("number")), _str(value.get("url"))
    if number is None and not url:
        return None
    return PullRequest(number, url, _str(value.get("head_sha")))


def _approvers(value: Any) -> tuple[Approver, ...]:
    return tuple(
        Approver(
            str(item["login"]),
            _int(item.get("review_id")),
            _str(item.get("commit")),
            _str(item.get("time")),
        )
        for item in (value if isinstance(value, list) else ())
        if isinstance(item, dict) and _str(item.get("login"))
    )


def _run_url(doc: Mapping[str, Any]) -> str | None:
    value = doc.get("run_url")
    return value if isinstance(value, str) and value else None


# --- releases, manifests, audit, monitor ----------------------------------------------------


_LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms")


def bench_latency(bench: Mapping[str, Any]) -> tuple[Latency, ...]:
    """The ONNX model's latency per batch size from a release's bench results: bench.json's
    `measurements`, else whatever the budget checks measured (their `value` for p50_ms, p95_ms,
    p99_ms)."""
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    for m in _list(bench.get("measurements")):
        m = _obj(m)
        size = _int(m.get("batch_size"))
        if size is None or m.get("engine", "onnx") != "onnx":
            continue
        for key in (*_LATENCY_KEYS, "throughput"):
            value = finite(m.get(key))
            if value is not None:
                rows[size][key] = value
    if not rows:
        for budget in _list(bench.get("budgets")):
            budget = _obj(budget)
            size, metric = _int(budget.get("batch_size")), budget.get("metric")
            value = finite(budget.get("value"))
            if size is not None and metric in _LATENCY_KEYS and value is not None:
                rows[size][str(metric)] = value
    return tuple(
        Latency(size, r.get("p50_ms"), r.get("p95_ms"), r.get("p99_ms"), r.get("throughput"))
        for size, r in sorted(rows.items())
        if r.get("p50_ms") is not None or r.get("p95_ms") is not None
    )


def version_from_release(n: int, release: Mapping[str, Any]) -> Version:
    """A `Version` from one release.json (DESIGN.md keys; results as test.json/bench.json)."""
    results = _obj(release.get("results"))
    test = _obj(results.get("test"))
    bench = _obj(results.get("bench"))
    metrics = tuple(
        Metric(
            str(check.get("name")),
            finite(check.get("value")),
            finite(check.get("min")),
            finite(check.get("max")),
            check.get("passed") is not False and check.get("status") != "fail",
        )
        for check in _list(test.get("checks"))
        if isinstance(check, dict) and check.get("kind") == "metric"
    )
    latency = bench_latency(bench)
    onnx = _obj(release.get("onnx"))
    artifact = _obj(release.get("artifact"))
    return Version(
        # The folder's number, not the one the record claims: the folder is what serves, and
        # `audit verify` checks the record against it (a release copied into another folder
        # must fail there, not pass as the version it names).
        number=n,
        semver=_str(release.get("version")) or "?",
        time=_str(release.get("time")),
        commit=_str(release.get("commit")),
        source=_str(release.get("source")),
        pull_request=pull_request(release.get("pull_request")),
        approvers=_approvers(release.get("approvers")),
        test_passed=_bool(test.get("passed")),
        bench_passed=_bool(bench.get("passed")),
        metrics=metrics,
        latency=latency,
        run_url=_run_url(release),
        onnx_sha256=_str(onnx.get("sha256")),
        artifact_sha256=_str(artifact.get("sha256")),
        audit_sha256=_str(_obj(release.get("audit")).get("sha256")),
    )


_METADATA = re.compile(r"^metadata:[ \t]*(?:#.*)?$", re.M)
_NEXT_TOP_KEY = re.compile(r"^[^\s#]", re.M)


def _metadata_block(text: str) -> str | None:
    """The block-style `metadata:` section of a manifest, up to the next top-level key."""
    found = _METADATA.search(text)
    if found is None:
        return None
    after = _NEXT_TOP_KEY.search(text, found.end())
    return text[found.start() : after.start() if after else len(text)]


def manifest_facts(text: str) -> dict[str, Any]:
    """name, owners, risk and description from a manifest's `metadata`.

    Only the metadata section is parsed when it can be cut out (a tenth of the document, and
    YAML parsing is most of the catalog's reading time); otherwise the whole document.
    """
    block = _metadata_block(text)
    meta: dict[str, Any] = {}
    if block is not None:
        try:
            meta = _obj(_obj(yaml.load(block, Loader=_Loader)).get("metadata"))  # noqa: S506
        except (yaml.YAMLError, ValueError):  # ValueError: a text like 2027-02-30
            meta = {}
    if not meta:
        try:
            doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - the C *safe* loader
        except (yaml.YAMLError, ValueError):
            doc = _as_validate_reads(text)
        meta = _obj(_obj(doc).get("metadata"))
    return {
        "name": _str(meta.get("name")),
        # A list or mapping is no owner: and str() of one built from YAML aliases (which this
        # loader, unlike validate's, resolves) can be gigabytes from a few lines.
        "owners": tuple(o for o in map(_str, _list(meta.get("owners"))) if o is not None),
        "risk": _str(meta.get("risk")),
        "description": _str(meta.get("description")),
    }


def _as_validate_reads(text: str) -> Any:
    """The manifest as validate reads it (a date that is none, `2027-02-30`, is text), or
    None when even that fails: the page still lists the model, from its name and records."""
    from mlops_ci.manifest.safe_yaml import YamlInvalid, read

    try:
        return read(text)[0]
    except YamlInvalid:
        return None


def event_from_record(record: Mapping[str, Any]) -> Event:
    return Event(
        time=_str(record.get("time")) or "",
        action=_str(record.get("action")) or "?",
        version=_str(record.get("version")),
        registry_version=_int(record.get("registry_version")),
        actor=_str(record.get("actor")),
        commit=_str(record.get("commit")),
        pull_request=pull_request(record.get("pull_request")),
        approvers=tuple(a.login for a in _approvers(record.get("approvers"))),
        reason=_str(record.get("reason")),
        source=_str(record.get("source")),
        run_url=_run_url(record),
    )


def served_intervals(events: Sequence[Event], semvers: Mapping[int, str]) -> tuple[Served, ...]:
    """Which version served when, replayed from the audit trail in its (append) order.

    A deploy or rollback makes its version serve. A failed smoke test puts back the version that
    served before: the one its record names (written as a rollback to it), or, when the record
    names the failed version itself, the one that served before that.
    """
    intervals: list[Served] = []

    def switch(number: int, time: str) -> None:
        if intervals and intervals[-1].end is None:
            if intervals[-1].number == number:
                return
            last = intervals[-1]
            intervals[-1] = Served(last.number, last.semver, last.start, time)
        intervals.append(Served(number, semvers.get(number), time))

    for event in events:
        n = event.registry_version
        if n is None or not event.time:
            continue
        if event.action in ("deploy", "rollback"):
            switch(n, event.time)
        elif event.action == "smoke-failed" and intervals:
            if intervals[-1].number != n:
                switch(n, event.time)
            else:
                before = [s.number for s in intervals[:-1] if s.number != n]
                if before:
                    switch(before[-1], event.time)
    return tuple(intervals)


def monitor_run(name: str, key: str, doc: Mapping[str, Any]) -> MonitorRun:
    """One verdict file as `monitor` writes it (`Verdict.to_json()` and its `time`): `stale`,
    `prediction_drift` and `decay` are bools; the staleness status and reason live under
    `staleness`."""
    drift = _obj(doc.get("drift"))
    staleness = _obj(doc.get("staleness"))
    status = staleness.get("status")
    columns = tuple(
        ColumnDrift(
            str(c.get("name")),
            _str(c.get("test")),
            finite(c.get("statistic")),
            finite(c.get("threshold")),
            c.get("drifted") is True,
        )
        for c in _list(drift.get("columns"))
        if isinstance(c, dict)
    )
    stem = key.rsplit("/", 1)[-1].removesuffix(".json")
    return MonitorRun(
        time=_str(doc.get("time")) or stem,
        version=_str(doc.get("version")),
        needs_attention=doc.get("needs_attention") is True,
        stale=doc.get("stale") is True,
        stale_warning=status == "warning",
        stale_detail=_str(staleness.get("reason")) if status in ("warning", "stale") else None,
        drift_share=_fraction(drift.get("share")),
        share_threshold=_fraction(drift.get("share_threshold")),
        dataset_drift=drift.get("dataset_drift") is True,
        columns=columns,
        prediction_drift=_bool(doc.get("prediction_drift")),
        decay=_bool(doc.get("decay")),
    )


# --- the whole catalog -----------------------------------------------------------------------


def audit_records(raw: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """The audit log's records, in order; a line that is not a JSON object becomes a problem."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            problems.append(f"{LOG_KEY}:{number}: not a JSON object")
    return records, problems


#: The most monitor verdicts the catalog reads and shows per model: the newest ones (a quarter
#: of daily runs). The monitor writes one per model per run and never deletes one: a daily run
#: over 10,000 models is 3.65 million files a year, and reading them all made every catalog
#: build (and catalog.json) grow without bound. Older verdicts stay in the registry.
MONITOR_RUNS = 90


def monitor_runs(
    reg: RegistryView, keys: Sequence[str], keep: int = MONITOR_RUNS
) -> tuple[dict[str, list[MonitorRun]], list[str]]:
    """Each model's newest `keep` monitor verdicts, oldest first: chosen from the listing by
    file name (sortable UTC times), so that only those are read."""
    runs: dict[str, list[MonitorRun]] = defaultdict(list)
    problems: list[str] = []
    by_model: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        parts = key[len(MONITOR_PREFIX) :].split("/")
        if len(parts) == 2 and parts[1].endswith(".json"):
            by_model[parts[0]].append(key)
    for name, model_keys in by_model.items():
        for key in sorted(model_keys)[-keep:]:
            try:
                doc = json.loads(reg.read_bytes(key) or b"null")
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                runs[name].append(monitor_run(name, key, doc))
            except _BAD_RECORD as exc:
                problems.append(f"{key}: {exc}")
    for name in runs:
        runs[name].sort(key=lambda r: r.time)
    return runs, problems


def read_model(
    reg: RegistryView,
    name: str,
    numbers: Sequence[int],
    events: Sequence[Event],
    monitor: Sequence[MonitorRun],
    unreadable: list[tuple[str, int]] | None = None,
) -> Model:
    """One model's facts; each version whose release.json cannot be read is appended to
    `unreadable` (its audit anchor cannot be checked)."""
    problems: list[str] = []
    versions: list[Version] = []
    serving: int | None = None
    try:
        serving = reg.serving_version(name)
    except _BAD_RECORD as exc:
        problems.append(f"{name}: {exc}")
    numbers = list(numbers)
    deployed = {e.registry_version for e in events if e.action == "deploy"}
    if numbers and numbers[-1] not in deployed and numbers[-1] != serving:
        # Staged by a deploy that never recorded it (killed, or under way): no version yet, as
        # for `serve` and `rollback`. `audit verify` says the same of it and nothing worse.
        problems.append(
            f"{name}/{numbers[-1]}: staged by a deploy that did not record it (interrupted, or "
            "under way as the catalog was read); not listed until it is recorded"
        )
        numbers.pop()
    for n in numbers:
        try:
            versions.append(version_from_release(n, reg.release(name, n)))
        except _BAD_RECORD as exc:
            problems.append(f"{name}/{n}/release.json: {exc}")
            if unreadable is not None:
                unreadable.append((name, n))
    facts: dict[str, Any] = {}
    shown = serving if serving in numbers else (numbers[-1] if numbers else None)
    if shown is not None:
        try:
            facts = manifest_facts(reg.manifest_text(name, shown))
        except _BAD_RECORD as exc:
            problems.append(f"{name}/{shown}/model.yaml: {exc}")
    served = served_intervals(events, {v.number: v.semver for v in versions})
    since = None
    if served and served[-1].end is None and served[-1].number == serving:
        since = served[-1].start
    elif serving is not None:
        since = next((v.time for v in versions if v.number == serving), None)
    return Model(
        name=name,
        owners=facts.get("owners", ()),
        risk=facts.get("risk"),
        description=facts.get("description"),
        serving=serving,
        serving_since=since,
        versions=tuple(versions),
        events=tuple(events),
        monitor=tuple(monitor),
        served=served,
        problems=tuple(problems),
    )


def repository_models(repo: Path, known: Iterable[str]) -> tuple[list[Model], list[str]]:
    """Models whose manifests are in the checkout `repo` but not in the registry."""
    known = set(known)
    found: list[Model] = []
    problems: list[str] = []
    root = os.path.realpath(repo)
    for path in find_manifests(repo):  # one walk; hidden folders and node_modules pruned
        try:
            facts = manifest_facts(_manifest_text(path, root))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        name = facts.get("name")
        if name and name not in known:
            known.add(name)
            found.append(
                Model(
                    name=name,
                    owners=facts["owners"],
                    risk=facts["risk"],
                    description=facts["description"],
                )
            )
    return found, problems


def _manifest_text(path: Path, root: str) -> str:
    """A checkout's manifest, read as validate reads one: a regular file inside the checkout
    and at most MAX_FILE_BYTES. A pull request can commit `model.yaml` as a symlink to
    `/dev/zero` (endless) or to a file outside the checkout."""
    from mlops_ci.manifest.safe_yaml import MAX_FILE_BYTES

    real = os.path.realpath(path)
    if not real.startswith(root.rstrip(os.sep) + os.sep):
        raise OSError(f"a symlink to {real}, outside the repository: not read")
    if not stat.S_ISREG(os.stat(real).st_mode):  # before open: a FIFO's open would block
        raise OSError("not a regular file: not read")
    with open(real, "rb") as fh:
        raw = fh.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES:,} bytes (the limit of a manifest): not read")
    return raw.decode("utf-8")


def listing(reg: RegistryView) -> tuple[dict[str, list[int]], list[str]]:
    """One listing of the model folders: each model (a folder with config.pbtxt, as
    `Registry.models`) with its published versions, and one of the monitor's verdict files.
    A pass over all instead of one per model keeps 10,000 models cheap, on S3 most of all."""
    models: dict[str, list[int]] = {}
    #: (model, version) -> how many of VERSION_FILES its folder holds: a version holds them all
    files: dict[tuple[str, int], int] = defaultdict(int)
    monitor = [key for key in reg.list_keys(MONITOR_PREFIX) if key.startswith(MONITOR_PREFIX)]
    for key in reg.model_keys():  # not .mlops/: the catalog reads none of the prediction log
        parts = key.split("/")
        if key.startswith("."):
            continue
        elif len(parts) == 2 and parts[1] == "config.pbtxt":
            models[parts[0]] = []
        elif len(parts) == 3 and parts[2] in VERSION_FILES and VERSION_DIR.fullmatch(parts[1]):
            files[parts[0], int(parts[1])] += 1
    whole = sorted(mv for mv, count in files.items() if count == len(VERSION_FILES))
    for name, n in whole:
        if name in models:
            models[name].append(n)
    return dict(sorted(models.items())), monitor


def _is_folder(reg: RegistryView) -> bool:
    from mlops_ci.registry import FileStore

    return isinstance(getattr(reg, "store", None), FileStore)


def read_catalog(
    reg: RegistryView,
    registry_label: str,
    repo: Path | None = None,
    now: datetime | None = None,
    workers: int = 8,
    sink: Sink | None = None,
) -> Catalog:
    """Every fact the catalog shows, read from `reg` (and the checkout `repo`). A `sink` gets
    the models batch by batch as they are read (`site.Stream` renders them meanwhile)."""
    # The catalog is a few million small acyclic objects: the cyclic garbage collector would
    # traverse all of them again and again while they are made (a sixth of the reading time of
    # 10,000 models) and never find a cycle.
    with no_gc():
        return _read_catalog(reg, registry_label, repo, now, workers, sink)


@contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused (reference counting still frees everything)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _read_catalog(
    reg: RegistryView,
    registry_label: str,
    repo: Path | None,
    now: datetime | None,
    workers: int,
    sink: Sink | None,
) -> Catalog:
    from mlops_ci import audit

    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    log = reg.read_log(LOG_KEY) or b""
    head = reg.read_bytes(HEAD_KEY)
    records, problems = audit_records(log)
    by_model: dict[str, list[Event]] = defaultdict(list)
    for record in records:
        name = record.get("model")
        if isinstance(name, str):
            by_model[name].append(event_from_record(record))
    names, monitor_keys = listing(reg)
    runs, monitor_problems = monitor_runs(reg, monitor_keys)
    problems += monitor_problems

    unreadable: list[tuple[str, int]] = []

    def one(name: str) -> Model:
        return read_model(
            reg, name, names[name], by_model.get(name, []), runs.get(name, []), unreadable
        )

    extra: dict[str, Model] = {}
    if repo is not None:
        found, repo_problems = repository_models(repo, names)
        # A model never deployed may still have a history: its first deploy refused (approvals
        # missing or forged), which its page must show as any other model's.
        extra = {
            m.name: dataclasses.replace(m, events=tuple(by_model[m.name]))
            if m.name in by_model
            else m
            for m in found
        }
        problems += repo_problems
    # A model the log has deployed whose folder is gone (removed by hand): listed as removed,
    # with its history from the log, not dropped with it. (A name the log holds refusals of
    # alone was never in the registry.)
    for name, events in by_model.items():
        if name in names or not any(e.action == "deploy" for e in events):
            continue
        semvers = {
            e.registry_version: e.version
            for e in events
            if e.action == "deploy" and e.registry_version is not None and e.version
        }
        base = extra.get(name) or Model(name=name, events=tuple(events))
        extra[name] = dataclasses.replace(
            base,
            served=served_intervals(events, semvers),
            monitor=tuple(runs.get(name, [])),
            removed=True,
        )
    order = sorted([*names, *extra])
    if sink is not None:
        # What the pages' header says before every release is read: the log's own verdict.
        chain = audit.verify_log(log, head)
        draft = AuditState(chain.records, chain.ok, chain.problem, chain.first_bad)
        sink.begin(Catalog(stamp, registry_label, (), draft), len(order))
    models: list[Model] = []
    # Threads overlap the round trips of an S3 registry. A folder's reads are CPU (JSON and
    # YAML parsing under the GIL), where threads only add contention: 2,000 models took twice
    # the CPU time with 8 threads as in one.
    if len(names) > 16 and workers > 1 and not _is_folder(reg):
        with ThreadPoolExecutor(workers) as pool:
            models = list(pool.map(lambda n: extra[n] if n in extra else one(n), order))
        if sink is not None:
            sink.models(0, models)
    else:
        for start in range(0, len(order), SINK_BATCH):
            models += [
                extra[n] if n in extra else one(n) for n in order[start : start + SINK_BATCH]
            ]
            if sink is not None:
                sink.models(start, models[start:])
    state = audit_state(reg, log, head, models, unreadable)
    for model in models:
        problems += model.problems
    return Catalog(stamp, registry_label, tuple(models), state, tuple(problems))


class Sink(Protocol):
    """Takes the catalog's models as they are read, to start on them before the last one is."""

    def begin(self, draft: Catalog, total: int) -> None:
        """Before the first model: the catalog's time, registry and the audit log's verdict
        (without the releases' anchors, checked at the end), and how many models follow."""

    def models(self, start: int, models: Sequence[Model]) -> None:
        """The next models, in the catalog's order; `start` is the first one's position."""


#: Models a sink gets at a time: a worker's share, and the most models read ahead of it.
SINK_BATCH = 500


def audit_state(
    reg: RegistryView,
    log: bytes,
    head: bytes | None,
    models: Sequence[Model],
    unreadable: Sequence[tuple[str, int]] = (),
) -> AuditState:
    """What `mlops-ci audit verify` says, shown on every page: a catalog of a tampered log must
    say so. `audit.verify` gets the log and the release records already read, so a large
    registry's 50,000 release.json files are not read a second time. A release.json that
    could not be read (`unreadable`) holds an anchor nobody checked: `audit verify` fails on
    it, and so does the catalog's verdict, never "verified"."""
    from mlops_ci import audit

    releases = {
        m.name: {
            v.number: audit.Anchor(v.audit_sha256, v.onnx_sha256, v.artifact_sha256)
            for v in m.versions
        }
        for m in models
    }
    serving = {m.name: m.serving for m in models}
    result = audit.verify(
        cast("Registry", reg), log=log, head=head, releases=releases, serving=serving
    )
    if result.ok and unreadable:
        name, n = min(unreadable)
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        problem = (
            f"{name}/{n}/release.json{more} cannot be read, so the audit record it names "
            "cannot be checked"
        )
        return AuditState(result.records, False, problem, None)
    return AuditState(result.records, result.ok, result.problem, result.first_bad)
