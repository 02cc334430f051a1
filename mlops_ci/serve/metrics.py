"""Prometheus metrics of `serve`, under the names users already chart for Triton.

The request path only bumps plain attributes of one `VersionStats` per model version, bound when
the version loads; prometheus_client reads them when `/metrics` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

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
    """The counters of one model version. Bumped on the event loop thread only; a scrape reads
    plain numbers, so no lock is needed."""

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


class Metrics:
    """Every model version's stats, the prediction log's counters, and the exposition."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], VersionStats] = {}
        self.log_rows = 0
        self.log_dropped = 0
        self._registry: Any = None

    def stats(self, model: str, version: str) -> VersionStats:
        """The stats of a model version, created once and kept across reloads."""
        key = (model, version)
        found = self._stats.get(key)
        if found is None:
            found = self._stats[key] = VersionStats(model, version)
        return found

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

        stats = list(self._stats.values())
        values = {
            "nv_inference_request_success": lambda s: s.success,
            "nv_inference_request_failure": lambda s: s.failure,
            "nv_inference_count": lambda s: s.count,
            "nv_inference_exec_count": lambda s: s.success,
            "nv_inference_request_duration_us": lambda s: round(s.duration_s * 1e6),
        }
        for name, doc in TRITON_COUNTERS.items():
            metric = Metric(name, doc, "counter")
            for s in stats:
                metric.add_sample(name, s.labels, float(values[name](s)))
            yield metric
        hist = HistogramMetricFamily(
            "mlops_ci_inference_request_duration_seconds",
            "Inference request latency, from the whole body received to the reply built",
            labels=["model", "version"],
        )
        for s in stats:
            cumulative, running = [], 0
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), s.buckets, strict=True):
                running += n
                cumulative.append((bound, float(running)))
            hist.add_metric([s.labels["model"], s.labels["version"]], cumulative, s.duration_s)
        yield hist
        rows = CounterMetricFamily(
            "mlops_ci_prediction_log_rows", "Rows written to the prediction log"
        )
        rows.add_metric([], float(self.log_rows))
        yield rows
        dropped = CounterMetricFamily(
            "mlops_ci_prediction_log_dropped_rows",
            "Sampled rows dropped because the prediction log's buffer was full",
        )
        dropped.add_metric([], float(self.log_dropped))
        yield dropped

    def exposition(self) -> bytes:
        """The text format, with Triton's counter names exactly as Triton writes them."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(self)
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
            self._registry = registry
        text = generate_latest(self._registry).decode()
        for name in TRITON_COUNTERS:
            text = text.replace(f"# HELP {name}_total ", f"# HELP {name} ", 1)
            text = text.replace(f"# TYPE {name}_total ", f"# TYPE {name} ", 1)
        return text.encode()
