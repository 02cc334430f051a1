"""The benchmark stage: latency and throughput of the native and ONNX model at the manifest's
batch sizes, budget checks, and the regression check against a baseline ONNX model measured in
the same process, interleaved; the results go to `bench.json`.

Why interleaved and paired: shared CI runners drift by tens of percent within a minute, so a
number stored from another run says little. Both models are timed here in alternating blocks
(A B, B A, A B, …); each round gives one ratio of block medians, which cancels drift slower than
a round; the verdict is a distribution-free confidence interval on the median ratio, so the check
flags a regression only when its *lower* bound exceeds the allowance.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci import atomic, data
from mlops_ci.errors import CheckFailed, MlopsCiError, UsageError
from mlops_ci.evaluate import model_to_load, onnx_session, repo_path

if TYPE_CHECKING:
    from mlops_ci.manifest import Manifest

DEFAULT_BATCH_SIZES = (1, 64)
DEFAULT_TIME_BUDGET_S = 1.0
DEFAULT_THREADS = 1
DEFAULT_MAX_REGRESSION = 0.1
#: Two-sided confidence of the interval on the median ratio (one-sided 97.5% for the flag).
CONFIDENCE = 0.95
#: Rounds of the A/B comparison: fewer gives intervals too wide to decide; more buys nothing.
MIN_ROUNDS, MAX_ROUNDS = 15, 201
#: A block should last long enough for its median to be stable, yet stay short next to drift.
_BLOCK_S = 0.002
_MIN_BLOCK_CALLS = 5


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """Latency percentiles and throughput of one engine at one batch size."""

    engine: str  # "onnx" | "native" | "baseline"
    batch_size: int
    iterations: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # rows per second

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "batch_size": self.batch_size,
            "iterations": self.iterations,
            "p50_ms": round(self.p50_ms, 6),
            "p95_ms": round(self.p95_ms, 6),
            "p99_ms": round(self.p99_ms, 6),
            "mean_ms": round(self.mean_ms, 6),
            "throughput": round(self.throughput, 3),
        }


@dataclass(frozen=True)
class BudgetCheck:
    """One limit from the manifest's `benchmark.budgets`, applied to the ONNX model."""

    batch_size: int
    metric: str  # p50_ms | p95_ms | p99_ms | min_throughput
    limit: float
    value: float

    @property
    def passed(self) -> bool:
        if self.metric == "min_throughput":
            return self.value >= self.limit
        return self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "metric": self.metric,
            "limit": self.limit,
            "value": round(self.value, 6),
            "passed": self.passed,
        }


@dataclass(frozen=True)
class Regression:
    """Candidate vs baseline at one batch size: median paired ratio and its confidence interval."""

    batch_size: int
    rounds: int
    calls_per_block: int
    ratio: float  # candidate / baseline latency; 1.25 = 25% slower
    low: float
    high: float
    noise: float  # relative spread (IQR / median) of the per-round ratios
    allowed: float  # max_regression
    baseline_p50_ms: float
    candidate_p50_ms: float

    @property
    def verdict(self) -> str:
        if self.low > 1 + self.allowed:
            return "regression"
        # symmetric: "faster" only for a speed-up as large as the slowdown that would fail, so
        # two sessions of the same model (which differ by a percent or so) are never "faster"
        if self.high < 1 / (1 + self.allowed):
            return "faster"
        return "ok"

    @property
    def passed(self) -> bool:
        return self.verdict != "regression"

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "rounds": self.rounds,
            "calls_per_block": self.calls_per_block,
            "ratio": round(self.ratio, 5),
            "ci_low": round(self.low, 5),
            "ci_high": round(self.high, 5),
            "confidence": CONFIDENCE,
            "noise": round(self.noise, 5),
            "max_regression": self.allowed,
            "baseline_p50_ms": round(self.baseline_p50_ms, 6),
            "candidate_p50_ms": round(self.candidate_p50_ms, 6),
            "verdict": self.verdict,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class BenchResult:
    """Everything `mlops-ci bench` measured for one model."""

    model: str
    version: str
    manifest: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    measurements: tuple[Measurement, ...]
    budgets: tuple[BudgetCheck, ...] = ()
    regressions: tuple[Regression, ...] = ()
    baseline: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(b.passed for b in self.budgets) and all(r.passed for r in self.regressions)

    @property
    def summary(self) -> str:
        """One short line for progress output and tables: p50 at the smallest batch, verdicts."""
        from mlops_ci.report.units import microseconds

        onnx = [m for m in self.measurements if m.engine == "onnx"]
        parts = []
        if onnx:
            first = min(onnx, key=lambda m: m.batch_size)
            parts.append(f"p50 {microseconds(first.p50_ms)} at batch {first.batch_size}")
        missed = [b for b in self.budgets if not b.passed]
        if missed:
            parts.append(f"{len(missed)} budget(s) missed")
        if self.regressions:
            worst = max(self.regressions, key=lambda r: r.low)
            parts.append(f"{worst.verdict} ×{worst.ratio:.2f}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": "bench",
            "model": self.model,
            "version": self.version,
            "manifest": self.manifest,
            "passed": self.passed,
            "machine": self.machine,
            "settings": self.settings,
            "measurements": [m.to_json() for m in self.measurements],
            "budgets": [b.to_json() for b in sorted(self.budgets, key=lambda b: b.passed)],
            "baseline": self.baseline,
            "regression": [r.to_json() for r in sorted(self.regressions, key=lambda r: r.passed)],
            "notes": list(self.notes),
        }


# --- timing -------------------------------------------------------------------------------------


def time_calls(
    fn: Callable[..., object],
    args: tuple[Any, ...],
    *,
    budget_s: float,
    min_iterations: int = 10,
    max_iterations: int = 1_000_000,
) -> np.ndarray:
    """Latencies (ns) of `fn(*args)`: warm up, calibrate the count to `budget_s`, then time.

    Warm-up takes a tenth of the budget (at least three calls): the first calls of an
    onnxruntime session allocate and are not what a server sees. Garbage collection is off while
    timing, as in `timeit`, so a collection does not land on one unlucky call.
    """
    clock = time.perf_counter_ns
    warm_until = clock() + int(budget_s * 0.1e9)
    warm_calls = 0
    warm_start = clock()
    while warm_calls < 3 or clock() < warm_until:
        fn(*args)
        warm_calls += 1
    per_call = max((clock() - warm_start) / warm_calls, 1.0)
    n = int(min(max(budget_s * 0.9e9 / per_call, min_iterations), max_iterations))
    times: list[int] = []
    append = times.append
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(n):
            t0 = clock()
            fn(*args)
            append(clock() - t0)
    finally:
        if enabled:
            gc.enable()
    return np.asarray(times, dtype=np.int64)


def summarize(engine: str, batch_size: int, times_ns: np.ndarray) -> Measurement:
    """Percentiles (ms) and throughput (rows/s) from per-call latencies."""
    ms = times_ns / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    mean = float(ms.mean())
    return Measurement(
        engine=engine,
        batch_size=batch_size,
        iterations=len(ms),
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=mean,
        throughput=batch_size / (mean / 1e3) if mean > 0 else math.inf,
    )


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free confidence interval for the median (order statistics, sign test).

    [x_(j), x_(n-j+1)] covers the median with probability 1 - 2·P(Bin(n, ½) ≤ j-1); take the
    largest j that keeps the coverage at least `confidence`. No assumption about the shape of
    the noise, which on CI machines is skewed and heavy-tailed.
    """
    xs = sorted(values)
    n = len(xs)
    alpha_half = (1 - confidence) / 2
    cdf = 0.0
    j = 1
    for k in range(n):
        cdf += math.comb(n, k) / 2**n  # P(X <= k)
        if cdf > alpha_half:
            break
        j = k + 1  # P(X <= j-1) = P(X <= k) is still within alpha/2
    j = min(j, (n + 1) // 2)
    return xs[j - 1], xs[n - j]


def compare(
    baseline: tuple[Callable[..., object], tuple[Any, ...]],
    candidate: tuple[Callable[..., object], tuple[Any, ...]],
    *,
    budget_s: float,
    allowed: float,
    batch_size: int = 1,
    rounds: int | None = None,
) -> Regression:
    """Time baseline (A) and candidate (B) interleaved in rounds and compare them.

    Each round times a block of A and a block of B, alternating which goes first (A B, B A, …)
    so a steady drift within a round favours neither; its ratio of block medians is one paired
    observation. The verdict uses the interval on the median of those ratios.
    """
    (fa, aa), (fb, ab) = baseline, candidate
    per_a = _warm(fa, aa, budget_s * 0.05)
    per_b = _warm(fb, ab, budget_s * 0.05)
    slower = max(per_a, per_b)
    # a block of several calls gives a stable median for fast models; a model slower than a
    # block is timed one call per block, or the minimum number of rounds would take minutes
    calls = max(_MIN_BLOCK_CALLS if slower < _BLOCK_S else 1, math.ceil(_BLOCK_S / slower))
    if rounds is None:
        rounds = int(budget_s * 0.9 / (calls * (per_a + per_b)))
        rounds = min(max(rounds, MIN_ROUNDS), MAX_ROUNDS)
    ratios: list[float] = []
    medians_a: list[float] = []
    medians_b: list[float] = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            if r % 2 == 0:
                ma = _block_median(fa, aa, calls)
                mb = _block_median(fb, ab, calls)
            else:
                mb = _block_median(fb, ab, calls)
                ma = _block_median(fa, aa, calls)
            medians_a.append(ma)
            medians_b.append(mb)
            ratios.append(mb / ma)
    finally:
        if enabled:
            gc.enable()
    ratio = float(np.median(ratios))
    low, high = median_interval(ratios)
    q1, q3 = np.percentile(ratios, [25, 75])
    return Regression(
        batch_size=batch_size,
        rounds=rounds,
        calls_per_block=calls,
        ratio=ratio,
        low=float(low),
        high=float(high),
        noise=float((q3 - q1) / ratio),
        allowed=allowed,
        baseline_p50_ms=float(np.median(medians_a)) / 1e6,
        candidate_p50_ms=float(np.median(medians_b)) / 1e6,
    )


def _warm(fn: Callable[..., object], args: tuple[Any, ...], seconds: float) -> float:
    """Warm a model up and return its mean seconds per call."""
    clock = time.perf_counter
    start = clock()
    calls = 0
    while calls < 3 or clock() - start < seconds:
        fn(*args)
        calls += 1
    return max((clock() - start) / calls, 1e-9)


def _block_median(fn: Callable[..., object], args: tuple[Any, ...], calls: int) -> float:
    clock = time.perf_counter_ns
    times = []
    for _ in range(calls):
        t0 = clock()
        fn(*args)
        times.append(clock() - t0)
    times.sort()
    mid = len(times) // 2
    return float(times[mid]) if len(times) % 2 else (times[mid - 1] + times[mid]) / 2


# --- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, OS, library versions."""
    import onnxruntime

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# --- the stage ----------------------------------------------------------------------------------


def run(
    manifest: Manifest,
    convert_dir: Path | None,
    out: Path,
    baseline: Path | None = None,
    *,
    onnx: Path | None = None,
    time_budget_s: float | None = None,
    native: bool = True,
) -> BenchResult:
    """Benchmark the model and write `out/bench.json`.

    `time_budget_s` overrides the manifest's budget per configuration (tests use it to stay fast);
    `native=False` skips the native model (e.g. when its framework is not installed).
    Only a missed budget or a regression is a verdict (exit 1); inputs that cannot be built or a
    model that cannot be loaded mean nothing was measured, which is an error (exit 2).
    """
    try:
        return _run(manifest, convert_dir, out, baseline, onnx, time_budget_s, native)
    except CheckFailed as exc:
        raise MlopsCiError(f"nothing measured: {exc}") from exc


def _run(
    manifest: Manifest,
    convert_dir: Path | None,
    out: Path,
    baseline: Path | None,
    onnx: Path | None,
    time_budget_s: float | None,
    native: bool,
) -> BenchResult:
    model_path = model_to_load(onnx, convert_dir)
    if baseline is not None and not baseline.is_file():
        raise UsageError(f"baseline {baseline} does not exist")
    spec = manifest.section("benchmark")
    budget_s = float(time_budget_s or spec.get("time_budget_s", DEFAULT_TIME_BUDGET_S))
    threads = int(spec.get("threads", DEFAULT_THREADS))
    allowed = float(spec.get("max_regression", DEFAULT_MAX_REGRESSION))
    budgets_spec = spec.get("budgets", [])
    sizes = sorted(
        set(spec.get("batch_sizes", DEFAULT_BATCH_SIZES)) | {b["batch_size"] for b in budgets_spec}
    )
    notes: list[str] = []

    session = onnx_session(model_path, threads)
    manifest = data.stage_manifest(manifest, session)
    rows, source = _sample_rows(manifest)
    notes.append(f"inputs: {source}")
    native_model = _native(manifest, notes) if native else None

    measurements: list[Measurement] = []
    regressions: list[Regression] = []
    base_session = onnx_session(baseline, threads) if baseline is not None else None
    comparable = base_session is not None and _same_inputs(session, base_session, notes)
    names = [o.name for o in session.get_outputs()]
    for size in sizes:
        feeds = _batch(manifest, rows, size)
        onnx_times = time_calls(session.run, (names, feeds), budget_s=budget_s)
        measurements.append(summarize("onnx", size, onnx_times))
        if native_model is not None:
            fw, model = native_model
            batch = _native_batch(manifest, feeds)
            with _native_threads(threads):
                native_times = time_calls(
                    fw.predict, (model, batch, manifest.signature), budget_s=budget_s
                )
            measurements.append(summarize("native", size, native_times))
        if base_session is not None and comparable:
            base_names = [o.name for o in base_session.get_outputs()]
            paired = compare(
                (base_session.run, (base_names, feeds)),
                (session.run, (names, feeds)),
                budget_s=budget_s,
                allowed=allowed,
                batch_size=size,
            )
            regressions.append(paired)
            measurements.append(
                Measurement(
                    "baseline",
                    size,
                    paired.rounds * paired.calls_per_block,
                    paired.baseline_p50_ms,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                )
            )

    by_size = {m.batch_size: m for m in measurements if m.engine == "onnx"}
    budgets = tuple(
        BudgetCheck(
            b["batch_size"], key, float(b[key]), _budget_value(by_size[b["batch_size"]], key)
        )
        for b in budgets_spec
        for key in ("p50_ms", "p95_ms", "p99_ms", "min_throughput")
        if key in b
    )
    result = BenchResult(
        model=manifest.name,
        version=manifest.version,
        manifest=repo_path(manifest),
        machine=machine(),
        settings={
            "time_budget_s": budget_s,
            "batch_sizes": sizes,
            "intra_op_threads": threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            # native models get the same thread count as onnxruntime, for a like-for-like ratio
            "native_threads": threads if native_model is not None else None,
            "warmup": "10% of the budget, at least 3 calls",
            "max_regression": allowed,
            "confidence": CONFIDENCE,
        },
        measurements=tuple(measurements),
        budgets=budgets,
        regressions=tuple(regressions),
        baseline=str(baseline) if baseline is not None else None,
        notes=tuple(notes),
    )
    atomic.write_json(out / "bench.json", result.to_json())
    return result


def main(
    manifest_path: Path,
    *,
    onnx: Path | None,
    convert_dir: Path | None,
    out: Path,
    baseline: Path | None,
    time_budget_s: float | None,
    native: bool,
) -> int:
    """`mlops-ci bench`: print the table and the verdicts; exit 1 on a budget miss or regression."""
    from mlops_ci import manifest as manifest_mod
    from mlops_ci.report import terminal

    m = manifest_mod.load(manifest_path)
    result = run(
        m, convert_dir, out, baseline, onnx=onnx, time_budget_s=time_budget_s, native=native
    )
    print(terminal.bench(result))
    return 0 if result.passed else 1


def _budget_value(m: Measurement, key: str) -> float:
    return m.throughput if key == "min_throughput" else float(getattr(m, key))


def _same_inputs(a: Any, b: Any, notes: list[str]) -> bool:
    sig_a = [(i.name, i.type) for i in a.get_inputs()]
    sig_b = [(i.name, i.type) for i in b.get_inputs()]
    if sig_a != sig_b:
        notes.append(
            "regression not measured: the baseline's inputs differ from the candidate's "
            f"({sig_b} vs {sig_a})"
        )
        return False
    return True


# --- inputs -------------------------------------------------------------------------------------


def _sample_rows(manifest: Manifest) -> tuple[data.Table | None, str]:
    """Realistic rows for the benchmark: evaluation data, else the test cases, else synthetic."""
    evaluation = manifest.section("evaluation")
    if evaluation:
        path = manifest.resolve(evaluation["data"]["path"])
        table = data.load_csv(path, evaluation["data"]["sha256"])
        if table.n_rows:
            return table, f"evaluation data ({table.n_rows} rows, repeated to fill a batch)"
    cases = manifest.section("tests").get("cases") or []
    if cases:
        try:
            return data.rows_table([c["input"] for c in cases]), "the manifest's test cases"
        except MlopsCiError:
            pass  # cases with differing columns: fall back to synthetic inputs
    return None, "synthetic (no evaluation data or test cases)"


def _batch(manifest: Manifest, rows: data.Table | None, size: int) -> dict[str, np.ndarray]:
    target = manifest.section("evaluation").get("target")
    if rows is None:
        return _synthetic(manifest, size)
    index = np.arange(size) % rows.n_rows
    return data.feeds(rows.select(index), manifest.signature, target=target)


def _synthetic(manifest: Manifest, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for spec in manifest.signature.inputs:
        shape = (size, *(d if d > 0 else 1 for d in spec.shape[1:]))
        if spec.dtype == "string":
            feeds[spec.name] = np.full(shape, "a", dtype=object)
        elif spec.dtype == "bool":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            feeds[spec.name] = rng.random(shape).astype(data.NUMPY_DTYPES[spec.dtype])
    return feeds


@contextlib.contextmanager
def _native_threads(threads: int) -> Iterator[None]:
    """Cap the OpenMP and BLAS pools (XGBoost, LightGBM, PyTorch, NumPy) while timing natively."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it the frameworks keep their defaults
        yield
        return
    with threadpool_limits(limits=threads):
        yield


def _native(manifest: Manifest, notes: list[str]) -> tuple[Any, Any] | None:
    """The framework module and the loaded native model, or None (with a note saying why)."""
    if manifest.framework == "onnx":
        notes.append("native: the artifact is ONNX; only onnxruntime is measured")
        return None
    from mlops_ci import frameworks, trust

    try:
        fw = frameworks.get(manifest.framework)
        return fw, fw.load(trust.artifact(manifest))
    except ImportError as exc:
        notes.append(f"native: not measured ({manifest.framework} is not installed: {exc.name})")
    except MlopsCiError as exc:
        notes.append(f"native: not measured ({exc})")
    return None


def _native_batch(manifest: Manifest, feeds: Mapping[str, np.ndarray]) -> Any:
    """The same rows as the ONNX feeds, as the framework modules take them."""
    from mlops_ci import frameworks

    # the manifest went through data.stage_manifest: its inputs name their columns
    columns = {spec.name: tuple(spec.columns or ()) for spec in manifest.signature.inputs}
    widened = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    return frameworks.Batch(feeds=widened, columns=columns)
