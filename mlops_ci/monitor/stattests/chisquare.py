"""Chi-square test of homogeneity on the 2 x k contingency table of reference and current counts.

A deliberate difference from Evidently, which runs a one-sample goodness-of-fit test of the
current counts against the reference shares: that test treats the reference shares as exact
and flagged a same-distribution column in 39 of 40 runs here. The two-sample test (as in
alibi-detect and NannyML) accounts for the reference being a sample too.
"""

from __future__ import annotations

import numpy as np

from mlops_ci.monitor import stattests
from mlops_ci.monitor.stattests._shared import discrete


def chisquare(counts: stattests.Counts) -> stattests.Outcome:
    from scipy.stats import chi2_contingency

    ref, cur = discrete(counts)
    keep = (ref + cur) > 0
    table = np.vstack([ref[keep], cur[keep]])
    if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        return stattests.Outcome(score=1.0, statistic=0.0)
    result = chi2_contingency(table, correction=False)
    return stattests.Outcome(score=float(result.pvalue), statistic=float(result.statistic))


stattests.register(
    stattests.StatTest(
        name="chisquare",
        title="chi-square (two-sample)",
        kinds=frozenset({"numeric", "categorical"}),
        score="p_value",
        default_threshold=0.05,
        compute=chisquare,
    )
)
