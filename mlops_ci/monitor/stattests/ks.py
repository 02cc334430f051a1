"""Two-sample Kolmogorov-Smirnov: the largest gap between the two empirical CDFs.

On cells whose edges are every distinct reference value (always so up to 4,096 values, which
covers Evidently's KS range of at most 1,000 reference rows) the statistic is exact: the
reference CDF is flat inside a cell and the current CDF is monotone, so the largest gap sits at a
cell boundary. With quantile edges, `error_bound` is the most it can grow inside a cell.
The p-value is scipy's asymptotic one (`ks_2samp(method="asymp")`).
"""

from __future__ import annotations

import numpy as np

from mlops_ci.monitor import stattests
from mlops_ci.monitor.counts import CategoricalCounts, NumericCounts


def ks(counts: stattests.Counts) -> stattests.Outcome:
    from scipy.stats import kstwo

    if isinstance(counts, CategoricalCounts):
        raise ValueError("KS needs a numeric column")
    d, bound = statistic(counts)
    n, m = sorted((float(counts.n_ref), float(counts.n_cur)), reverse=True)
    en = n * m / (n + m)
    p = float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return stattests.Outcome(score=p, statistic=d, error_bound=bound)


def statistic(counts: NumericCounts) -> tuple[float, float]:
    """(D at the cell boundaries, how much larger the exact D can be)."""
    fr = np.cumsum(counts.ref) / counts.n_ref
    fc = np.cumsum(counts.cur) / counts.n_cur
    d = float(np.max(np.abs(fr - fc)))
    # Inside open cell 2j both CDFs lie between their values at the cell's ends.
    fr_a, fc_a = np.concatenate(([0.0], fr[1::2])), np.concatenate(([0.0], fc[1::2]))
    fr_b, fc_b = fr[0::2], fc[0::2]
    upper = float(np.max(np.maximum(np.abs(fr_a - fc_b), np.abs(fr_b - fc_a))))
    return d, max(0.0, upper - d)


stattests.register(
    stattests.StatTest(
        name="ks",
        title="Kolmogorov-Smirnov",
        kinds=frozenset({"numeric"}),
        score="p_value",
        default_threshold=0.05,
        compute=ks,
    )
)
