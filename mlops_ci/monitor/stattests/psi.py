"""Population stability index: sum of (ref% - cur%) x ln(ref% / cur%); drift at >= 0.1.

Empty bins count as 0.0001, as in Evidently. Numeric columns use ten reference-decile bins.
"""

from __future__ import annotations

import numpy as np

from mlops_ci.monitor import stattests
from mlops_ci.monitor.stattests._shared import discrete, shares

EMPTY_SHARE = 0.0001


def psi(counts: stattests.Counts) -> stattests.Outcome:
    ref, cur = discrete(counts)
    r = np.where(ref > 0, shares(ref), EMPTY_SHARE)
    c = np.where(cur > 0, shares(cur), EMPTY_SHARE)
    value = float(np.sum((r - c) * np.log(r / c)))
    return stattests.Outcome(score=value, statistic=value)


stattests.register(
    stattests.StatTest(
        name="psi",
        title="population stability index",
        kinds=frozenset({"numeric", "categorical"}),
        score="distance",
        default_threshold=0.1,
        compute=psi,
    )
)
