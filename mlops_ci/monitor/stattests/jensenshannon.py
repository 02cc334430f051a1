"""Jensen-Shannon distance (scipy's, natural log) between the two distributions; drift at >= 0.1.

Categories are compared as counted; a numeric column with many values is cut into ten bins at
the reference's deciles, which are known before the current data streams by (Evidently cuts 30
equal-width bins over both samples, which needs the current data's range first).
"""

from __future__ import annotations

from mlops_ci.monitor import stattests
from mlops_ci.monitor.stattests._shared import discrete, shares


def jensenshannon(counts: stattests.Counts) -> stattests.Outcome:
    from scipy.spatial import distance

    ref, cur = discrete(counts)
    value = float(distance.jensenshannon(shares(ref), shares(cur)))
    return stattests.Outcome(score=value, statistic=value)


stattests.register(
    stattests.StatTest(
        name="jensenshannon",
        title="Jensen-Shannon distance",
        kinds=frozenset({"numeric", "categorical"}),
        score="distance",
        default_threshold=0.1,
        compute=jensenshannon,
    )
)
