"""Data drift of many columns at once: counts accumulated batch by batch, then one test each.

`Columns` is built from the reference (a pyarrow Table: small enough to hold), fed current
record batches one at a time, and judged once: the per-column test (the manifest's, else
Evidently's default choice), its threshold, an optional multiple-testing correction, and the
dataset verdict on the share of drifted columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mlops_ci.monitor import stattests
from mlops_ci.monitor.counts import CategoricalAccumulator, CategoricalCounts, NumericCounts

Correction = Literal["none", "bonferroni", "fdr"]
DEFAULT_SHARE = 0.5
CHART_BINS = 10


@dataclass(frozen=True)
class ColumnRule:
    """A manifest's choice for one column (or for all): test name and threshold, when set."""

    test: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Settings:
    rule: ColumnRule = ColumnRule()
    per_column: Mapping[str, ColumnRule] = field(default_factory=dict)
    share: float = DEFAULT_SHARE
    correction: Correction = "none"
    categorical: frozenset[str] = frozenset()
    #: Columns that reach the model as float32 (or float16), by that pyarrow type: both samples
    #: are compared at that precision (see `Columns.seen`).
    precision: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    kind: str
    test: str
    score_kind: str  # "p_value" | "distance"
    score: float  # compared with threshold: a p-value or a distance
    statistic: float  # the test's own statistic
    threshold: float
    drifted: bool
    error_bound: float
    n_reference: int
    n_current: int
    missing_current: int
    bins: tuple[str, ...]  # for charts: bin or category labels
    reference_shares: tuple[float, ...]
    current_shares: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "test": self.test,
            "score_kind": self.score_kind,
            "statistic": _round(self.score),
            "test_statistic": _round(self.statistic),
            "threshold": self.threshold,
            "drifted": self.drifted,
            "error_bound": _round(self.error_bound),
            "rows": {"reference": self.n_reference, "current": self.n_current},
            "missing_current": self.missing_current,
        }


@dataclass(frozen=True)
class DriftResult:
    columns: tuple[ColumnDrift, ...]
    share: float
    share_threshold: float
    dataset_drift: bool
    correction: str
    rows: int

    @property
    def drifted(self) -> tuple[ColumnDrift, ...]:
        return tuple(c for c in self.columns if c.drifted)

    def to_json(self) -> dict[str, Any]:
        return {
            "share": _round(self.share),
            "share_threshold": self.share_threshold,
            "dataset_drift": self.dataset_drift,
            "correction": self.correction,
            "rows": self.rows,
            "columns": [c.to_json() for c in self.columns],
        }


def _round(x: float) -> float:
    return float(f"{x:.6g}") if np.isfinite(x) else x


def column_kind(name: str, arrow_type: Any, settings: Settings) -> stattests.Kind:
    import pyarrow as pa

    if name in settings.categorical:
        return "categorical"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return "numeric"
    if pa.types.is_decimal(arrow_type):
        return "numeric"
    return "categorical"


class Columns:
    """The running counts of every tested column."""

    def __init__(self, reference: Any, names: Sequence[str], settings: Settings) -> None:
        import pyarrow as pa

        self.settings = settings
        self.rows = 0
        self.numeric: dict[str, NumericCounts] = {}
        self.categorical: dict[str, CategoricalAccumulator] = {}
        self.order = list(names)
        for name in names:
            if name not in reference.column_names:
                raise ValueError(f"the reference data has no column {name!r}")
            col = self.seen(name, reference.column(name))
            if column_kind(name, col.type, settings) == "numeric":
                values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
                self.numeric[name] = NumericCounts.from_reference(name, values)
            else:
                self.categorical[name] = CategoricalAccumulator(name, col.to_pylist())

    def seen(self, name: str, col: Any) -> Any:
        """A numeric column at the precision the model reads it. Serve logs a float32 input as
        float32 while the reference CSV reads as float64: 0.1 is not float32(0.1), so every
        value of a column of a few decimals fell beside its reference value, and identical
        data drifted (KS p = 1e-41). Rounding both samples the same way matches them."""
        import pyarrow as pa
        import pyarrow.compute as pc

        kind = self.settings.precision.get(name)
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        if kind is None or not numeric or col.type == kind:
            return col
        return pc.cast(col, kind, safe=False)

    def only(self, names: Sequence[str]) -> Columns:
        """These columns alone (before any batch is added): the others are not tested."""
        keep = set(names)
        self.order = [n for n in self.order if n in keep]
        self.numeric = {k: v for k, v in self.numeric.items() if k in keep}
        self.categorical = {k: v for k, v in self.categorical.items() if k in keep}
        return self

    def add(self, batch: Any) -> None:
        """Count one record batch of current data (it must hold every tested column)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        self.rows += batch.num_rows
        for name, counts in self.numeric.items():
            col = self.seen(name, batch.column(name))
            if not pa.types.is_floating(col.type) or col.type != pa.float64():
                try:
                    col = pc.cast(col, pa.float64(), safe=False)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    # a CSV cell such as `abc` makes the whole column text
                    raise ValueError(
                        f"column {name!r} holds {col.type} values that are not numbers, where "
                        f"the reference has numbers ({str(exc).splitlines()[0]})"
                    ) from None
            counts.add(col.to_numpy(zero_copy_only=False))
        for name, acc in self.categorical.items():
            vc = pc.value_counts(self.seen(name, batch.column(name)))
            acc.add_counts(
                zip(
                    vc.field("values").to_pylist(),
                    vc.field("counts").to_pylist(),
                    strict=True,
                )
            )

    def add_all(self, batches: Iterable[Any]) -> Columns:
        for batch in batches:
            self.add(batch)
        return self

    def judge(self) -> DriftResult:
        picked: list[tuple[str, stattests.Kind, stattests.Counts, stattests.StatTest, float]] = []
        for name in self.order:
            counts: stattests.Counts
            kind: stattests.Kind
            if name in self.numeric:
                counts, kind = self.numeric[name], "numeric"
            else:
                counts, kind = self.categorical[name].counts(), "categorical"
            # As Evidently: a column's own rule, else the manifest-wide one, else the default
            # choice; a manifest-wide threshold applies to every column, whatever its test.
            rule = self.settings.per_column.get(name, ColumnRule())
            test_name = rule.test or self.settings.rule.test or "auto"
            if test_name != "auto":
                test = stattests.get(test_name)
                if kind not in test.kinds:
                    raise ValueError(f"column {name!r} is {kind}; {test.title} cannot test it")
            else:
                test = stattests.default_test(kind, counts.n_ref, counts.n_values())
            threshold = next(
                t
                for t in (rule.threshold, self.settings.rule.threshold, test.default_threshold)
                if t is not None
            )
            picked.append((name, kind, counts, test, float(threshold)))

        outcomes = [_compute(name, counts, test) for name, _, counts, test, _ in picked]
        thresholds = _corrected(
            [(t.score, o.score, th) for (_, _, _, t, th), o in zip(picked, outcomes, strict=True)],
            self.settings.correction,
        )
        columns = []
        for (name, kind, counts, test, _), outcome, threshold in zip(
            picked, outcomes, thresholds, strict=True
        ):
            bins, ref_sh, cur_sh = _chart(counts)
            columns.append(
                ColumnDrift(
                    name=name,
                    kind=kind,
                    test=test.name,
                    score_kind=test.score,
                    score=outcome.score,
                    statistic=outcome.statistic,
                    threshold=threshold,
                    drifted=(counts.n_cur > 0 or counts.cur_missing > 0)
                    and test.drifted(outcome.score, threshold),
                    error_bound=outcome.error_bound,
                    n_reference=counts.n_ref,
                    n_current=counts.n_cur,
                    missing_current=counts.cur_missing,
                    bins=bins,
                    reference_shares=ref_sh,
                    current_shares=cur_sh,
                )
            )
        n_drifted = sum(c.drifted for c in columns)
        share = n_drifted / len(columns) if columns else 0.0
        return DriftResult(
            columns=tuple(columns),
            share=share,
            share_threshold=self.settings.share,
            dataset_drift=bool(columns) and share >= self.settings.share,
            correction=self.settings.correction,
            rows=self.rows,
        )


def _compute(name: str, counts: stattests.Counts, test: stattests.StatTest) -> stattests.Outcome:
    if counts.n_cur == 0 and counts.cur_missing > 0:
        # Rows came, but not one value (all null, NaN or infinite): the reference had values,
        # so the column drifted as far as it can (Evidently refuses such a column outright).
        p_value = test.score == "p_value"
        return stattests.Outcome(score=0.0 if p_value else np.inf, statistic=np.nan)
    if counts.n_cur == 0:
        # Nothing to compare: report no drift rather than a made-up score.
        return stattests.Outcome(score=1.0 if test.score == "p_value" else 0.0, statistic=0.0)
    return test.compute(counts)


def _corrected(scored: Sequence[tuple[str, float, float]], correction: Correction) -> list[float]:
    """Per-column thresholds after the correction; only p-value tests are corrected.

    Bonferroni divides the threshold by the number of p-value tests. FDR (Benjamini-Hochberg)
    finds the largest rank i with p_(i) <= i/m x alpha and uses p_(i) as every column's cut.
    """
    p_idx = [i for i, (kind, _, _) in enumerate(scored) if kind == "p_value"]
    out = [th for _, _, th in scored]
    m = len(p_idx)
    if correction == "none" or m == 0:
        return out
    if correction == "bonferroni":
        for i in p_idx:
            out[i] = scored[i][2] / m
        return out
    # A NaN p-value ranks last (sorted among numbers it breaks their order: the cut then
    # depended on the order of the columns); it is drifted whatever the cut.
    ranked = sorted(p_idx, key=lambda i: (math.isnan(scored[i][1]), scored[i][1]))
    cut = 0.0
    for rank, i in enumerate(ranked, start=1):
        if scored[i][1] <= rank / m * scored[i][2]:
            cut = np.nextafter(scored[i][1], np.inf)  # drift is "p < threshold"
    for i in p_idx:
        out[i] = float(cut)
    return out


Chart = tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]


def _chart(counts: stattests.Counts) -> Chart:
    """Up to ten bins (quantile bins, or the largest categories) for the issue's charts."""
    if isinstance(counts, NumericCounts) and counts.n_values() > 5:
        ref, cur, labels = counts.quantile_bins(CHART_BINS)
    else:
        cat = counts if isinstance(counts, CategoricalCounts) else counts.as_categories()
        order = np.argsort(-(_share(cat.ref) + _share(cat.cur)), kind="stable")[:CHART_BINS]
        ref, cur, labels = cat.ref[order], cat.cur[order], [cat.categories[i] for i in order]
    return (
        tuple(labels),
        tuple(round(float(x), 4) for x in _share(ref)),
        tuple(round(float(x), 4) for x in _share(cur)),
    )


def _share(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)
