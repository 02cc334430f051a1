"""The drift statistics of `monitor`: default choice, detection, false alarms, error bounds.

Pure and fast: synthetic data with known drift, counted through the same streaming code that
reads production data, checked against scipy's exact computations on the raw rows.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from mlops_ci.monitor import drift, reader, staleness, stattests
from mlops_ci.monitor.counts import NumericCounts

CATS = np.array(["a", "b", "c", "d"])
MIX = [0.4, 0.3, 0.2, 0.1]


def _table(rng: np.random.Generator, n: int, shifted: set[int], remixed: set[int]) -> pa.Table:
    """20 numeric columns (n0..n19) and 5 categorical ones (c0..c4)."""
    cols: dict[str, object] = {}
    for i in range(20):
        cols[f"n{i}"] = rng.normal(0.5 if i in shifted else 0.0, 1.0, n)
    for i in range(5):
        p = MIX[::-1] if i in remixed else MIX
        cols[f"c{i}"] = rng.choice(CATS, n, p=p)
    return pa.table(cols)


def _judge(ref: pa.Table, cur: pa.Table, settings: drift.Settings | None = None, batch: int = 997):
    cols = drift.Columns(ref, ref.column_names, settings or drift.Settings())
    cols.add_all(cur.to_batches(max_chunksize=batch))
    return cols.judge()


# --- the default choice ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "n_ref", "n_values", "expected"),
    [
        ("numeric", 1000, 6, "ks"),
        ("numeric", 1000, 5, "chisquare"),
        ("numeric", 1000, 2, "z"),
        ("categorical", 1000, 3, "chisquare"),
        ("categorical", 1000, 2, "z"),
        ("numeric", 1001, 6, "wasserstein"),
        ("numeric", 1001, 5, "jensenshannon"),
        ("categorical", 1001, 50, "jensenshannon"),
    ],
)
def test_default_choice_follows_evidently(kind, n_ref, n_values, expected):
    assert stattests.default_test(kind, n_ref, n_values).name == expected


def test_every_test_registers_name_kinds_and_threshold():
    assert set(stattests.TESTS) == {"ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"}
    for test in stattests.TESTS.values():
        assert test.kinds and test.default_threshold == (0.05 if test.score == "p_value" else 0.1)


# --- synthetic drift ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_ref", "correction", "tests"),
    [
        # Evidently's large-data tests: distances, no correction needed.
        (5000, "none", {"wasserstein", "jensenshannon"}),
        # Small reference: KS and chi-square p-values over 25 columns, Bonferroni-corrected.
        (1000, "bonferroni", {"ks", "chisquare"}),
    ],
)
def test_synthetic_drift_flags_exactly_the_drifted_columns(n_ref, correction, tests):
    rng = np.random.default_rng(12)
    ref = _table(rng, n_ref, set(), set())
    cur = _table(rng, 20_000, shifted={3, 7, 15}, remixed={2})
    result = _judge(ref, cur, drift.Settings(correction=correction))
    assert {c.name for c in result.drifted} == {"n3", "n7", "n15", "c2"}
    assert {c.test for c in result.columns} == tests
    assert result.share == pytest.approx(4 / 25)
    assert not result.dataset_drift  # 4 of 25 is below the default share of 0.5
    assert result.rows == 20_000


def test_dataset_drift_when_the_share_is_reached():
    rng = np.random.default_rng(3)
    ref = _table(rng, 2000, set(), set())
    cur = _table(rng, 4000, shifted={0, 1, 2, 3, 4}, remixed=set())
    assert not _judge(ref, cur).dataset_drift
    assert _judge(ref, cur, drift.Settings(share=0.2)).dataset_drift  # 5 of 25 reach 0.2


def test_batches_do_not_change_the_result():
    rng = np.random.default_rng(5)
    ref = _table(rng, 800, set(), set())
    cur = _table(rng, 3000, shifted={1}, remixed={0})
    one = _judge(ref, cur, batch=3000)
    many = _judge(ref, cur, batch=101)
    assert [(c.score, c.drifted) for c in one.columns] == [
        (c.score, c.drifted) for c in many.columns
    ]


# --- false alarms ---------------------------------------------------------------------------------


def test_false_alarm_rate_is_at_most_five_percent_per_column():
    """50 fresh reference/current pairs drawn from one distribution, 26 columns, correction off:
    KS, chi-square and z at p < 0.05. Measured with this seed: 49 alarms in 1,300 column tests
    (3.8%). A correct test at level 0.05 alarms 5% of the time in expectation, so the check is
    that the rate is not above 5% beyond chance (binomial, one-sided, p > 0.01)."""
    rng = np.random.default_rng(2024)
    runs, alarms, tests = 50, 0, 0
    per_column = None
    for _ in range(runs):
        ref = _table(rng, 1000, set(), set())
        ref = ref.append_column("flag", pa.array(rng.choice(["y", "n"], 1000)))
        cur = _table(rng, 1000, set(), set())
        cur = cur.append_column("flag", pa.array(rng.choice(["y", "n"], 1000)))
        result = _judge(ref, cur)
        flags = np.array([c.drifted for c in result.columns], dtype=int)
        per_column = flags if per_column is None else per_column + flags
        alarms += int(flags.sum())
        tests += len(flags)
    assert {c.test for c in result.columns} == {"ks", "chisquare", "z"}
    assert stats.binomtest(alarms, tests, 0.05, alternative="greater").pvalue > 0.01
    assert alarms / tests <= 0.06, f"false-alarm rate {alarms / tests:.1%}"
    assert per_column is not None and per_column.max() <= 0.16 * runs  # no chronic column


def test_distance_tests_raise_no_false_alarms_on_large_data():
    rng = np.random.default_rng(7)
    ref = _table(rng, 5000, set(), set())
    for _ in range(5):
        assert not _judge(ref, _table(rng, 20_000, set(), set())).drifted


def test_two_sample_chisquare_avoids_the_one_sample_false_alarms():
    """Evidently's one-sample chi-square takes the reference shares as exact; against a large
    current sample of the same distribution it raises alarms the two-sample test does not.
    Measured with this seed: one-sample 40 of 40 runs, two-sample 0 of 40."""
    rng = np.random.default_rng(11)
    one_sample = two_sample = 0
    runs = 40
    for _ in range(runs):
        ref = rng.choice(CATS, 200, p=MIX)
        cur = rng.choice(CATS, 200_000, p=MIX)
        r = np.array([np.sum(ref == c) for c in CATS])
        c = np.array([np.sum(cur == k) for k in CATS])
        one_sample += stats.chisquare(c, r / r.sum() * c.sum()).pvalue < 0.05
        result = _judge(pa.table({"k": ref}), pa.table({"k": cur}), batch=50_000)
        two_sample += result.columns[0].drifted
    assert one_sample >= runs // 2
    assert two_sample <= runs * 0.1


# --- exactness and error bounds -------------------------------------------------------------------


def _numeric(ref: np.ndarray, cur: np.ndarray, max_edges: int = 4096) -> NumericCounts:
    counts = NumericCounts.from_reference("x", ref, max_edges)
    for part in np.array_split(cur, 7):
        counts.add(part)
    return counts


def test_ks_is_exact_when_every_reference_value_is_an_edge():
    rng = np.random.default_rng(1)
    ref = np.round(rng.normal(size=900), 2)  # ties on purpose
    cur = np.round(rng.normal(0.1, 1.1, size=20_000), 2)
    outcome = stattests.TESTS["ks"].compute(_numeric(ref, cur))
    exact = stats.ks_2samp(ref, cur, method="asymp")
    assert outcome.statistic == pytest.approx(exact.statistic, abs=1e-12)
    assert outcome.score == pytest.approx(exact.pvalue, rel=1e-9)
    assert outcome.error_bound == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.3])
def test_ks_and_wasserstein_on_quantile_bins_stay_within_their_stated_bounds(shift):
    rng = np.random.default_rng(9)
    ref = rng.lognormal(size=50_000)
    cur = rng.lognormal(shift, 1.0, size=200_000)
    counts = _numeric(ref, cur)
    ks = stattests.TESTS["ks"].compute(counts)
    exact_d = stats.ks_2samp(ref, cur).statistic
    assert ks.statistic <= exact_d + 1e-12 <= ks.statistic + ks.error_bound + 1e-12
    w = stattests.TESTS["wasserstein"].compute(counts)
    exact_w = stats.wasserstein_distance(ref, cur) / np.std(ref)
    assert abs(w.score - exact_w) <= w.error_bound + 1e-12
    assert w.error_bound < 0.03  # a heavy tail, 4,096 bins: still a third of the threshold
    if shift:
        assert abs(w.score - exact_w) < 0.01  # the estimate is far better than its bound


def test_psi_matches_the_formula_on_reference_deciles():
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(size=10_000), rng.normal(0.2, 1, size=10_000)
    out = stattests.TESTS["psi"].compute(_numeric(ref, cur))
    edges = np.quantile(ref, np.linspace(0, 1, 11))[1:-1]
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=10) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=10) / len(cur)
    assert out.score == pytest.approx(float(np.sum((r - c) * np.log(r / c))), rel=0.02)


def test_missing_values_are_dropped_and_counted():
    ref = pa.table({"x": pa.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0] * 20)})
    cur = pa.table({"x": pa.array([1.0, None, 3.0, float("nan"), 5.0, 6.0, 7.0] * 20)})
    col = _judge(ref, cur).columns[0]
    assert col.n_current == 100 and col.missing_current == 40


def test_a_column_with_no_value_in_production_drifted_under_every_test():
    """Rows came, and every value of the column was null, NaN or infinite (a producer that
    stopped filling it): the column was judged `no drift` with a p-value of 1. Evidently
    refuses such a column; here it is drifted, whatever the test or the correction."""
    ref = pa.table({"x": pa.array(np.arange(140.0) % 7), "y": pa.array(np.arange(140.0))})
    cur = pa.table({"x": pa.array([None, float("nan"), float("inf")] * 40, pa.float64()),
                    "y": pa.array(np.arange(120.0))})  # fmt: skip
    for test in stattests.TESTS:
        rule = drift.ColumnRule(test)
        for correction in ("none", "bonferroni", "fdr"):
            settings = drift.Settings(per_column={"x": rule}, correction=correction)  # type: ignore[arg-type]
            x, y = _judge(ref, cur, settings).columns
            assert (x.drifted, x.n_current, x.missing_current) == (True, 0, 120), (test, x)
            assert not y.drifted
    # no rows at all is not the same: nothing to compare, nothing drifted
    empty = _judge(ref, cur.slice(0, 0))
    assert [c.drifted for c in empty.columns] == [False, False] and empty.rows == 0


def test_a_score_that_is_not_a_number_is_never_no_drift():
    """One reference value and one current value under a forced `test: ks`: the asymptotic
    p-value of an effective sample of 0.5 rows is NaN, and `NaN < 0.05` is false, so the column
    was judged `no drift`. A score that cannot be computed says nothing is fine: drifted."""
    one = pa.table({"x": pa.array([1.0])})
    for correction in ("none", "bonferroni", "fdr"):
        settings = drift.Settings(rule=drift.ColumnRule("ks"), correction=correction)  # type: ignore[arg-type]
        (x,) = _judge(one, one, settings).columns
        assert np.isnan(x.score) and x.drifted, (correction, x)
    for test in stattests.TESTS.values():
        assert test.drifted(float("nan"), test.default_threshold), test.name
    # FDR ranks a NaN p-value last: sorted among the others it broke their order, and the cut
    # depended on the order of the columns.
    for ps in itertools.permutations((float("nan"), 0.001, 0.01, 0.02, 0.2)):
        cut = drift._corrected([("p_value", p, 0.05) for p in ps], "fdr")[0]
        assert 0.02 < cut < 0.2, ps


def test_categorical_codes_are_one_category_whatever_numeric_type_carries_them():
    """The reference CSV reads codes 0..3 as int64; serve logs a float32 model input as
    float32: `3` and `3.0` were different categories, and a column of the very same codes
    drifted with p = 0."""
    import io

    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    text = "c\n" + "".join(f"{c}\n" for c in rng.integers(0, 4, 800))
    ref = pacsv.read_csv(io.BytesIO(text.encode()))
    assert ref.schema.field("c").type == pa.int64()
    codes = rng.integers(0, 4, 3000).astype(np.float32)
    codes[:30] = np.nan  # NaN is a missing value, as in numeric columns, not a category
    cur = pa.table({"c": pa.array(codes, from_pandas=False)})
    (col,) = _judge(ref, cur, drift.Settings(categorical=frozenset({"c"}))).columns
    assert col.test == "chisquare" and not col.drifted, col
    assert sorted(col.bins) == ["0", "1", "2", "3"] and col.missing_current == 30


def test_the_z_test_set_on_a_column_of_more_values_compares_the_first_values_share():
    """`test: z` on a column that has, or later sees, a third value raised ValueError, and the
    whole monitor run died. As Evidently: the first value's share against all the others."""
    ref = pa.table({"c": pa.array(["a"] * 50 + ["b"] * 25 + ["c"] * 25)})
    same = pa.table({"c": pa.array(["a"] * 500 + ["b"] * 100 + ["c"] * 300 + ["d"] * 100)})
    moved = pa.table({"c": pa.array(["a"] * 200 + ["b"] * 800)})
    settings = drift.Settings(rule=drift.ColumnRule("z"))
    (col,) = _judge(ref, same, settings).columns
    assert col.test == "z" and col.score == pytest.approx(1.0) and not col.drifted
    (col,) = _judge(ref, moved, settings).columns
    assert col.drifted and col.score < 1e-6


def test_prediction_drift_of_a_healthy_classifier_alarms_in_at_most_five_percent_of_runs():
    """Prediction drift is any drifted output: label plus two probabilities, each tested at
    5%, made a healthy binary classifier need attention in 8% of runs (a daily schedule opens
    an issue every other week). The outputs are corrected as one family."""
    from mlops_ci.monitor.check import output_settings

    def outputs(x: np.ndarray) -> pa.Table:
        p1 = 1 / (1 + np.exp(-2 * (x[:, 0] + x[:, 1])))
        return pa.table({"output.label": (p1 > 0.5).astype(np.int64),
                         "output.probabilities[0]": (1 - p1).astype(np.float32),
                         "output.probabilities[1]": p1.astype(np.float32)})  # fmt: skip

    def alarm_rate(settings: drift.Settings, runs: int = 300) -> float:
        alarms = 0
        for seed in range(runs):
            rng = np.random.default_rng(seed)
            ref, cur = outputs(rng.normal(size=(800, 2))), outputs(rng.normal(size=(3000, 2)))
            alarms += any(c.drifted for c in _judge(ref, cur, settings, batch=3000).columns)
        return alarms / runs

    labels = frozenset({"output.label"})
    assert alarm_rate(drift.Settings(categorical=labels)) > 0.06  # armed: uncorrected
    assert alarm_rate(output_settings(drift.Settings(), labels)) <= 0.05
    # a real shift of the outputs is still found
    rng = np.random.default_rng(1)
    shifted = outputs(rng.normal(0.2, 1, size=(3000, 2)))
    reference = outputs(rng.normal(size=(800, 2)))
    found = _judge(reference, shifted, output_settings(drift.Settings(), labels))
    assert all(c.drifted for c in found.columns)
    assert output_settings(drift.Settings(correction="fdr"), labels).correction == "fdr"


# --- corrections ----------------------------------------------------------------------------------


def test_bonferroni_divides_and_fdr_cuts_at_the_benjamini_hochberg_rank():
    scored = [("p_value", p, 0.05) for p in (0.001, 0.01, 0.03, 0.2)] + [("distance", 0.3, 0.1)]
    assert drift._corrected(scored, "none") == [0.05] * 4 + [0.1]
    assert drift._corrected(scored, "bonferroni") == [0.0125] * 4 + [0.1]
    fdr = drift._corrected(scored, "fdr")
    # ranks: 0.001 <= 0.0125, 0.01 <= 0.025, 0.03 <= 0.0375, 0.2 > 0.05 -> the cut admits 0.03
    assert 0.03 < fdr[0] < 0.2 and fdr[4] == 0.1


# --- staleness ------------------------------------------------------------------------------------


def test_staleness_past_due_in_warning_window_and_fresh():
    now = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    deployed = now - dt.timedelta(days=100)
    past = staleness.judge(deployed, refresh_by=None, max_age_days=90, now=now)
    warn = staleness.judge(deployed, refresh_by=dt.date(2026, 12, 20), max_age_days=None, now=now)
    fresh = staleness.judge(deployed, refresh_by=None, max_age_days=365, now=now)
    none = staleness.judge(deployed, refresh_by=None, max_age_days=None, now=now)
    assert (past.status, warn.status, fresh.status, none.status) == (
        "stale",
        "warning",
        "fresh",
        "no deadline",
    )
    assert past.stale and not warn.stale
    assert round(past.days_left) == -10 and round(warn.days_left) == 20
    # The earlier deadline wins.
    both = staleness.judge(deployed, refresh_by=dt.date(2027, 6, 1), max_age_days=99, now=now)
    assert both.stale and "max_age_days" in both.reason


def test_parquet_is_scanned_without_pre_buffering():
    fmt = reader.parquet_format()
    assert fmt.default_fragment_scan_options.pre_buffer is False
