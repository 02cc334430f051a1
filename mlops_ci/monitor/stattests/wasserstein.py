"""Normed Wasserstein distance: the area between the two CDFs over the reference's spread.

As Evidently's `wasserstein_distance_norm`: W1 / max(std(reference), 0.001), drift at >= 0.1.
Beyond the reference's extremes the integral is exact (sums of distances are counted); inside
each cell both CDFs are interpolated linearly, and `error_bound` is the largest possible error
of that interpolation given only that the CDFs are monotone: at most the sum over cells of
width x (reference share + current share), about 2 x range / 4096 for 4,096 quantile edges.
"""

from __future__ import annotations

import numpy as np

from mlops_ci.monitor import stattests
from mlops_ci.monitor.counts import CategoricalCounts, NumericCounts


def wasserstein(counts: stattests.Counts) -> stattests.Outcome:
    if isinstance(counts, CategoricalCounts):
        raise ValueError("Wasserstein needs a numeric column")
    w, bound = distance(counts)
    norm = max(counts.ref_std, 0.001)
    return stattests.Outcome(score=w / norm, statistic=w / norm, error_bound=bound / norm)


def distance(counts: NumericCounts) -> tuple[float, float]:
    """(W1 estimate, bound on its error), in the column's units."""
    fr = np.cumsum(counts.ref) / counts.n_ref
    fc = np.cumsum(counts.cur) / counts.n_cur
    tails = (counts.below + counts.above) / counts.n_cur
    # Open cells between consecutive edges: 2, 4, ..., 2K-2; ends a (after e[j-1]), b (before e[j]).
    inner = slice(2, len(fr) - 1, 2)
    width = np.diff(counts.edges)
    u = fr[1:-2:2] - fc[1:-2:2]  # at a: through the point cell of e[j-1]
    v = fr[inner] - fc[inner]  # at b: through the open cell
    same = u * v >= 0
    area = np.where(
        same,
        (np.abs(u) + np.abs(v)) / 2,
        (u * u + v * v) / (2 * np.maximum(np.abs(u) + np.abs(v), 1e-300)),
    )
    estimate = tails + float(np.sum(width * area))
    # The difference inside a cell lies in [Fr(a) - Fc(b), Fr(b) - Fc(a)].
    lo_d = fr[1:-2:2] - fc[inner]
    hi_d = fr[inner] - fc[1:-2:2]
    low = np.where((lo_d <= 0) & (hi_d >= 0), 0.0, np.minimum(np.abs(lo_d), np.abs(hi_d)))
    high = np.maximum(np.abs(lo_d), np.abs(hi_d))
    lower = tails + float(np.sum(width * low))
    upper = tails + float(np.sum(width * high))
    return estimate, max(upper - estimate, estimate - lower, 0.0)


stattests.register(
    stattests.StatTest(
        name="wasserstein",
        title="Wasserstein (normed)",
        kinds=frozenset({"numeric"}),
        score="distance",
        default_threshold=0.1,
        compute=wasserstein,
    )
)
