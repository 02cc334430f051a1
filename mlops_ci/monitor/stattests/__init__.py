"""The drift tests: a table of named tests and the function that picks one per column.

Each test lives in its own module and registers itself here with its name, the column kinds it
fits, whether its score is a p-value (drift below the threshold) or a distance (drift at or
above it), and its default threshold. Tests compute from counts (`monitor.counts`), never from
rows, so they work the same on a thousand rows or a billion streamed ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mlops_ci.monitor.counts import CategoricalCounts, NumericCounts

Counts = NumericCounts | CategoricalCounts
Kind = Literal["numeric", "categorical"]

#: Evidently's boundary between "small" and "large" reference data.
SMALL_REFERENCE = 1000
#: At most this many distinct values and a numeric column is tested like a categorical one.
FEW_VALUES = 5


@dataclass(frozen=True)
class Outcome:
    """A test's score and, for binned estimates, how far the exact value can be from it."""

    score: float
    statistic: float  # the test's own statistic (KS D, chi², z); equals score for distances
    error_bound: float = 0.0


@dataclass(frozen=True)
class StatTest:
    name: str
    title: str
    kinds: frozenset[Kind]
    score: Literal["p_value", "distance"]
    default_threshold: float
    compute: Callable[[Counts], Outcome]

    def drifted(self, score: float, threshold: float) -> bool:
        # Written so that a NaN score (a test that could not be computed, e.g. KS on one value
        # against one) is drifted: every comparison with NaN is false, and "not below the
        # threshold" must not read as "no drift".
        if self.score == "p_value":
            return not score >= threshold
        return not score < threshold


TESTS: dict[str, StatTest] = {}


def register(test: StatTest) -> StatTest:
    TESTS[test.name] = test
    return test


def get(name: str) -> StatTest:
    try:
        return TESTS[name]
    except KeyError:
        known = ", ".join(sorted(TESTS))
        raise ValueError(f"unknown drift test {name!r} (known: {known})") from None


def default_test(kind: Kind, n_reference: int, n_values: int) -> StatTest:
    """Evidently's default choice (`_get_default_stattest`), read in one screen.

    `n_values` counts the distinct values of reference and current together.
    """
    if n_reference <= SMALL_REFERENCE:
        if kind == "numeric" and n_values > FEW_VALUES:
            return TESTS["ks"]
        return TESTS["chisquare"] if n_values > 2 else TESTS["z"]
    if kind == "numeric" and n_values > FEW_VALUES:
        return TESTS["wasserstein"]
    return TESTS["jensenshannon"]


# Importing the modules registers the tests.
from mlops_ci.monitor.stattests import (  # noqa: E402
    chisquare,
    jensenshannon,
    ks,
    psi,
    wasserstein,
    ztest,
)

__all__ = [
    "TESTS",
    "Counts",
    "Kind",
    "Outcome",
    "StatTest",
    "chisquare",
    "default_test",
    "get",
    "jensenshannon",
    "ks",
    "psi",
    "register",
    "wasserstein",
    "ztest",
]
