"""`mlops-ci bench`: measurements, budgets, and the interleaved regression check on real forests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier

from mlops_ci import bench, cli, manifest
from tests.stage_models import ModelRepo, make_repo

FAST = 0.05  # seconds per configuration: enough for stable medians of microsecond calls


@pytest.fixture(scope="module")
def forests(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepo, ModelRepo]:
    """The deployed model (12 shallow trees) and a candidate that is much slower (150 deep)."""
    X, y = datasets.load_breast_cancer(return_X_y=True)
    root = tmp_path_factory.mktemp("forests")
    small = RandomForestClassifier(n_estimators=12, max_depth=4, random_state=0).fit(X, y)
    big = RandomForestClassifier(n_estimators=150, max_depth=8, random_state=0).fit(X, y)
    benchmark = {"batch_sizes": [1, 32], "max_regression": 0.1}
    deployed = make_repo(root / "a", "tumor", small, X[:100], y[:100], benchmark=benchmark)
    candidate = make_repo(root / "b", "tumor", big, X[:100], y[:100], benchmark=benchmark)
    return deployed, candidate


def test_bench_measures_native_and_onnx_at_each_batch_size(forests: Any, tmp_path: Path) -> None:
    deployed, _ = forests
    m = manifest.load(deployed.manifest)
    result = bench.run(m, deployed.onnx.parent, tmp_path, time_budget_s=FAST)

    assert result.passed
    seen = {(x.engine, x.batch_size) for x in result.measurements}
    assert seen == {("onnx", 1), ("onnx", 32), ("native", 1), ("native", 32)}
    assert all(x.iterations >= 10 for x in result.measurements)
    # the batch really has 32 rows: onnxruntime takes longer on it than on one row, yet gets
    # through more rows per second (the per-call overhead is shared by 32 rows)
    onnx = {x.batch_size: x for x in result.measurements if x.engine == "onnx"}
    assert onnx[32].p50_ms > onnx[1].p50_ms
    assert onnx[32].throughput > 2 * onnx[1].throughput
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["machine"]["cpu"] and doc["machine"]["usable_cores"] >= 1
    assert doc["settings"]["intra_op_threads"] == 1
    assert doc["settings"]["time_budget_s"] == FAST
    assert doc["regression"] == [] and doc["baseline"] is None


def test_missed_budget_exits_1_and_is_listed_first(
    forests: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed, _ = forests
    doc = manifest.load(deployed.manifest).data
    doc["spec"]["benchmark"]["budgets"] = [
        {"batch_size": 1, "p99_ms": 10_000},
        {"batch_size": 32, "p50_ms": 1e-6, "min_throughput": 1},
    ]
    path = deployed.manifest.with_name("model.yaml")
    original = path.read_text()
    import yaml

    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        code = cli.main(
            [
                "bench",
                str(path),
                "--convert-dir",
                str(deployed.onnx.parent),
                "--out",
                str(tmp_path),
                "--time-budget",
                str(FAST),
                "--no-native",
            ]
        )
    finally:
        path.write_text(original)

    assert code == 1
    out = json.loads((tmp_path / "bench.json").read_text())
    assert [(b["batch_size"], b["metric"], b["passed"]) for b in out["budgets"]] == [
        (32, "p50_ms", False),
        (1, "p99_ms", True),
        (32, "min_throughput", True),
    ]
    assert capsys.readouterr().out.startswith("FAIL  budget  batch 32 p50 ")


def test_bigger_forest_is_caught_as_a_regression(forests: Any, tmp_path: Path) -> None:
    deployed, candidate = forests
    m = manifest.load(candidate.manifest)
    code = cli.main(
        [
            "bench",
            str(candidate.manifest),
            "--onnx",
            str(candidate.onnx),
            "--out",
            str(tmp_path),
            "--baseline",
            str(deployed.onnx),
            "--time-budget",
            "0.1",
            "--no-native",
        ]
    )
    assert code == 1
    doc = json.loads((tmp_path / "bench.json").read_text())
    by_batch = {r["batch_size"]: r for r in doc["regression"]}
    assert by_batch[32]["verdict"] == "regression"
    assert by_batch[32]["ci_low"] > 1.1
    assert by_batch[32]["rounds"] >= bench.MIN_ROUNDS
    assert m.name == doc["model"]
    baseline = [x for x in doc["measurements"] if x["engine"] == "baseline"]
    assert {x["batch_size"] for x in baseline} == {1, 32}


def test_same_model_against_itself_is_never_flagged(forests: Any, tmp_path: Path) -> None:
    deployed, _ = forests
    m = manifest.load(deployed.manifest)
    verdicts = []
    for i in range(6):
        result = bench.run(
            m,
            None,
            tmp_path / str(i),
            deployed.onnx,
            onnx=deployed.onnx,
            time_budget_s=FAST,
            native=False,
        )
        verdicts += [r.verdict for r in result.regressions]
        assert result.passed
    assert len(verdicts) == 12
    assert "regression" not in verdicts


def test_regression_check_on_identical_calls_reports_ratio_one() -> None:
    values = np.ones((256, 8), dtype=np.float32)

    def work(x: np.ndarray) -> float:
        return float((x @ x.T).sum())

    result = bench.compare((work, (values,)), (work, (values,)), budget_s=0.2, allowed=0.1)
    assert result.verdict != "regression"
    # Noise on a shared runner may widen the interval, but it must not exclude "no difference".
    assert result.low < 1.1 and result.high > 0.9
    assert result.rounds >= bench.MIN_ROUNDS


@pytest.mark.parametrize(
    ("n", "expected"),
    [(5, (1, 5)), (15, (4, 12)), (30, (10, 21)), (51, (19, 33))],
)
def test_median_interval_uses_sign_test_order_statistics(n: int, expected: tuple[int, int]) -> None:
    # P(Bin(15, .5) <= 3) = 0.018 <= 0.025 < P(<= 4) = 0.059, so [x_4, x_12] for n = 15
    assert bench.median_interval(list(range(1, n + 1))) == expected


def test_median_interval_covers_the_median_at_least_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    trials = 2000
    covered = sum(
        lo <= 0 <= hi
        for lo, hi in (
            bench.median_interval(rng.standard_normal(25).tolist()) for _ in range(trials)
        )
    )
    assert covered / trials >= 0.94


def _regression(ratios: list[float], allowed: float = 0.1) -> bench.Regression:
    low, high = bench.median_interval(ratios)
    return bench.Regression(
        batch_size=1,
        rounds=len(ratios),
        calls_per_block=5,
        ratio=float(np.median(ratios)),
        low=low,
        high=high,
        noise=0.05,
        allowed=allowed,
        baseline_p50_ms=0.010,
        candidate_p50_ms=0.0125,
    )


def test_a_candidate_25_percent_slower_at_batch_1_is_flagged() -> None:
    # 31 paired rounds of a candidate 25% slower, with ±8% round-to-round noise
    rng = np.random.default_rng(3)
    ratios = (1.25 * (1 + rng.uniform(-0.08, 0.08, 31))).tolist()
    verdict = _regression(ratios, allowed=0.1)
    assert verdict.verdict == "regression" and not verdict.passed
    # the same slowdown is within a 30% allowance, and an unchanged model is never flagged
    assert _regression(ratios, allowed=0.3).verdict == "ok"
    same = (1 + rng.uniform(-0.08, 0.08, 31)).tolist()
    assert _regression(same, allowed=0.1).verdict == "ok"


def test_a_slowdown_is_flagged_only_when_the_whole_interval_exceeds_the_allowance() -> None:
    # median 1.25, but half the rounds say "no change": the interval reaches below 1.1
    ratios = [1.0] * 15 + [1.25] * 16
    assert _regression(ratios).low <= 1.1
    assert _regression(ratios).verdict == "ok"
    # a speed-up as large as a failing slowdown is "faster"
    assert _regression([0.8] * 31).verdict == "faster"


def test_the_interleaved_comparison_flags_a_call_25_percent_slower() -> None:
    import time

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    result = bench.compare((spin, (100e-6,)), (spin, (125e-6,)), budget_s=0.2, allowed=0.1)
    assert result.verdict == "regression", result
    assert 1.15 < result.ratio < 1.4
