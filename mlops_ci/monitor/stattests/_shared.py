"""Helpers the tests share: a column's counts as a discrete distribution."""

from __future__ import annotations

import numpy as np

from mlops_ci.monitor.counts import CategoricalCounts, NumericCounts

#: Numeric columns with many values are cut into this many reference-quantile bins for PSI and
#: Jensen-Shannon (the classic PSI deciles; Evidently cuts 30 equal-width bins of both samples).
QUANTILE_BINS = 10


def discrete(counts: NumericCounts | CategoricalCounts) -> tuple[np.ndarray, np.ndarray]:
    """(reference counts, current counts) over categories, or over quantile bins."""
    if isinstance(counts, CategoricalCounts):
        return counts.ref.astype(np.float64), counts.cur.astype(np.float64)
    if counts.n_values() <= 5:
        cat = counts.as_categories()
        return cat.ref.astype(np.float64), cat.cur.astype(np.float64)
    ref, cur, _ = counts.quantile_bins(QUANTILE_BINS)
    return ref.astype(np.float64), cur.astype(np.float64)


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts
