"""Prometheus metrics of `serve`, under the names users already chart for Triton.

The request path only bumps plain attributes of one `VersionStats` per model version, bound when
the version loads; prometheus_client reads them when `/metrics` is scraped. With `--workers N`,
a scrape reports the sum over the workers (`shared_counters`).
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_ci.serve.shared_counters import SharedCounters, Snapshot

#: Upper bounds (seconds) of the latency histogram: 100 µs to 10 s.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0)

#: Triton's counters, which carry no `_total` suffix (prometheus_client would add one).
TRITON_COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (a batch of n counts n)",
    "nv_inference_exec_count": "Number of model executions performed",
    "nv_inference_request_duration_us": "Cumulative duration of successful requests, in µs",
}


class VersionStats:
    """The counters of one model version. Bumped on the event loop thread only; a scrape (and
    the thread that shares them with other workers) reads plain numbers, so no lock is needed."""

    __slots__ = ("buckets", "count", "duration_s", "failure", "labels", "success")

    def __init__(self, model: str, version: str) -> None:
        self.labels = {"model": model, "version": version}
        self.success = 0
        self.failure = 0
        self.count = 0
        self.duration_s = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)

    def ok(self, seconds: float, batch: int) -> None:
        self.success += 1
        self.count += batch
        self.duration_s += seconds
        self.buckets[bisect_left(BUCKETS, seconds)] += 1

    def failed(self) -> None:
        self.failure += 1

    def row(self) -> list[Any]:
        """As JSON: [model, version, success, failure, count, duration_s, buckets]."""
        m, v = self.labels["model"], self.labels["version"]
        return [m, v, self.success, self.failure, self.count, self.duration_s, list(self.buckets)]


class Metrics:
    """Every model version's stats, the prediction log's counters, and the exposition: of this
    process, or summed with the other workers' when `shared` is given (`--workers N`)."""

    def __init__(self, shared: SharedCounters | None = None) -> None:
        self._stats: dict[tuple[str, str], VersionStats] = {}
        self.log_rows = 0
        self.log_dropped = 0
        # Sessions built (serving versions and versions asked for by path), and versions by path
        # dropped from the cache (--version-cache): bumped by the model store under its lock.
        self.version_loads = 0
        self.version_evictions = 0
        # Large requests whose client left while they waited for a turn: never computed.
        self.abandoned = 0
        self.shared = shared
        self._registry: Any = None

    def stats(self, model: str, version: str) -> VersionStats:
        """The stats of a model version, created once and kept across reloads."""
        key = (model, version)
        found = self._stats.get(key)
        if found is None:
            found = self._stats[key] = VersionStats(model, version)
        return found

    def snapshot(self) -> Snapshot:
        """This process's counters as plain JSON values (what a worker shares)."""
        return {
            "versions": [s.row() for s in list(self._stats.values())],
            "log_rows": self.log_rows,
            "log_dropped": self.log_dropped,
            "version_loads": self.version_loads,
            "version_evictions": self.version_evictions,
            "abandoned": self.abandoned,
        }

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

        snapshots = [self.snapshot()] if self.shared is None else self.shared.gather(self.snapshot)
        versions, totals = _sum(snapshots)
        values = {
            "nv_inference_request_success": lambda v: v.success,
            "nv_inference_request_failure": lambda v: v.failure,
            "nv_inference_count": lambda v: v.count,
            "nv_inference_exec_count": lambda v: v.success,
            "nv_inference_request_duration_us": lambda v: round(v.duration_s * 1e6),
        }
        for name, doc in TRITON_COUNTERS.items():
            metric = Metric(name, doc, "counter")
            for (model, version), v in versions.items():
                labels = {"model": model, "version": version}
                metric.add_sample(name, labels, float(values[name](v)))
            yield metric
        hist = HistogramMetricFamily(
            "mlops_ci_inference_request_duration_seconds",
            "Inference request latency, from the whole body received to the reply built",
            labels=["model", "version"],
        )
        for (model, version), v in versions.items():
            cumulative, running = [], 0
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), v.buckets, strict=True):
                running += n
                cumulative.append((bound, float(running)))
            hist.add_metric([model, version], cumulative, v.duration_s)
        yield hist
        for key, (name, doc) in _TOTALS.items():
            total = CounterMetricFamily(name, doc)
            total.add_metric([], float(totals[key]))
            yield total

    def exposition(self) -> bytes:
        """The text format, with Triton's counter names exactly as Triton writes them."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(self)
            # One worker's CPU seconds, memory and GC counts are not the server's: with
            # --workers N each worker's keep their own series (labelled with its pid), so none
            # goes backwards when the next scrape lands on another worker.
            per_process = registry if self.shared is None else CollectorRegistry()
            ProcessCollector(registry=per_process)
            PlatformCollector(registry=per_process)
            GCCollector(registry=per_process)
            if per_process is not registry:
                registry.register(_WithPid(per_process))
            self._registry = registry
        text = generate_latest(self._registry).decode()
        for name in TRITON_COUNTERS:
            text = text.replace(f"# HELP {name}_total ", f"# HELP {name} ", 1)
            text = text.replace(f"# TYPE {name}_total ", f"# TYPE {name} ", 1)
        return text.encode()


#: The process-wide counters of a snapshot -> (metric name, help).
_TOTALS = {
    "log_rows": ("mlops_ci_prediction_log_rows", "Rows written to the prediction log"),
    "log_dropped": (
        "mlops_ci_prediction_log_dropped_rows",
        "Sampled rows dropped because the prediction log's buffer was full",
    ),
    "version_loads": (
        "mlops_ci_model_version_loads",
        "onnxruntime sessions loaded: serving versions, and versions asked for by path",
    ),
    "version_evictions": (
        "mlops_ci_model_version_evictions",
        "Versions loaded by path and unloaded again to stay within --version-cache",
    ),
    "abandoned": (
        "mlops_ci_abandoned_requests",
        "Large requests whose client left before they were computed: dropped unanswered",
    ),
}


class _VersionSum:
    """One model version's counters added up over workers."""

    __slots__ = ("buckets", "count", "duration_s", "durations", "failure", "success")

    def __init__(self) -> None:
        self.success = self.failure = self.count = 0
        self.durations: list[float] = []
        self.duration_s = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)


def _sum(
    snapshots: Iterable[Snapshot],
) -> tuple[dict[tuple[str, str], _VersionSum], dict[str, int]]:
    """The counters of several workers (`VersionStats.row` each) added up; one snapshot: that
    process's own. Returns the per-version sums and the process-wide counters' (`_TOTALS`)."""
    versions: dict[tuple[str, str], _VersionSum] = {}
    totals = dict.fromkeys(_TOTALS, 0)
    for snap in snapshots:
        for model, version, success, failure, count, duration_s, buckets in snap["versions"]:
            total = versions.get((model, version))
            if total is None:
                total = versions[(model, version)] = _VersionSum()
            total.success += success
            total.failure += failure
            total.count += count
            total.durations.append(duration_s)
            total.buckets = [a + b for a, b in zip(total.buckets, buckets, strict=True)]
        for key in totals:
            totals[key] += snap[key]
    for total in versions.values():
        # fsum is exact before its one rounding, so the sum never dips by a rounding error when
        # the files come in another order or a worker joins.
        total.duration_s = math.fsum(total.durations)
    return versions, totals


class _WithPid:
    """The samples of prometheus_client collectors, with this process's `pid` label added."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._pid = str(os.getpid())

    def collect(self) -> Iterator[Any]:
        for family in self._inner.collect():
            family.samples = [
                s._replace(labels={**s.labels, "pid": self._pid}) for s in family.samples
            ]
            yield family
