"""Two-proportion z-test for a column with two values, as Evidently's `z_stat_test`."""

from __future__ import annotations

import math

import numpy as np

from mlops_ci.monitor import stattests
from mlops_ci.monitor.stattests._shared import discrete


def ztest(counts: stattests.Counts) -> stattests.Outcome:
    from scipy.stats import norm

    ref, cur = discrete(counts)
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    if len(ref) < 2:
        return stattests.Outcome(score=1.0, statistic=0.0)
    if len(ref) > 2:
        # A manifest may set `test: z` on a column that has (or later sees) more values: as
        # Evidently does, compare the share of the first value against all the others.
        ref, cur = np.array([ref[0], ref[1:].sum()]), np.array([cur[0], cur[1:].sum()])
    n1, n2 = ref.sum(), cur.sum()
    # Share of the first value (Evidently: the smallest key), as a proportion in each sample.
    p1, p2 = ref[0] / n1, cur[0] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = float((p1 - p2) / se) if se > 0 else 0.0
    p = float(2 * (1 - norm.cdf(abs(z))))
    return stattests.Outcome(score=float(np.clip(p, 0, 1)), statistic=z)


stattests.register(
    stattests.StatTest(
        name="z",
        title="z-test (two proportions)",
        kinds=frozenset({"numeric", "categorical"}),
        score="p_value",
        default_threshold=0.05,
        compute=ztest,
    )
)
