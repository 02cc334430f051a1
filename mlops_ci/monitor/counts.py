"""Per-column counts of reference and current data, accumulated batch by batch.

A numeric column is cut at edges taken from the reference (every distinct reference value when
there are few, else its quantiles) into cells: the open interval before each edge and the edge
itself, so ties and discrete values are counted exactly. A categorical column counts values.
Everything a drift test needs is derived from these counts; the rows themselves are never kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

#: Fine bins for numeric columns: searchsorted over 4,096 edges is 12 comparisons per value, and
#: keeps the Wasserstein bound near 2 x range / 4096 (see docs/monitoring.md).
MAX_EDGES = 4096
#: Categories tracked per column; rarer ones beyond this are pooled, so memory stays bounded.
MAX_CATEGORIES = 10_000
OTHER = "(other)"


def finite(values: np.ndarray) -> np.ndarray:
    """The finite values as float64 (missing and infinite values are dropped, as Evidently does)."""
    x = np.asarray(values, dtype=np.float64)
    return x[np.isfinite(x)]


@dataclass
class NumericCounts:
    """Cell counts of one numeric column. Cell 2j is (e[j-1], e[j]), cell 2j+1 is {e[j]}."""

    name: str
    edges: np.ndarray
    ref: np.ndarray
    ref_std: float
    ref_missing: int
    cur: np.ndarray = field(init=False)
    cur_missing: int = 0
    #: sum of (e[0] - x) over current values below the first edge, and of (x - e[-1]) above the
    #: last: the Wasserstein integral over the tails is then exact.
    below: float = 0.0
    above: float = 0.0

    def __post_init__(self) -> None:
        self.cur = np.zeros_like(self.ref)

    @classmethod
    def from_reference(
        cls, name: str, values: np.ndarray, max_edges: int = MAX_EDGES
    ) -> NumericCounts:
        raw = np.asarray(values, dtype=np.float64)
        x = np.sort(raw[np.isfinite(raw)])
        if len(x) == 0:
            raise ValueError(f"reference column {name!r} has no finite values")
        distinct = x[np.concatenate(([True], x[1:] != x[:-1]))]
        if len(distinct) <= max_edges:
            edges = distinct
        else:
            # numpy's default (linear) quantiles, read off the sorted values
            pos = np.linspace(0.0, 1.0, max_edges + 1) * (len(x) - 1)
            lo = np.floor(pos).astype(np.int64)
            hi = np.minimum(lo + 1, len(x) - 1)
            edges = np.unique(x[lo] + (pos - lo) * (x[hi] - x[lo]))
        ref, _, _ = _sorted_counts(edges, x)
        return cls(name, edges, ref, float(np.std(x)), int(len(raw) - len(x)))

    def add(self, values: np.ndarray) -> None:
        """Count one batch of current values."""
        raw = np.asarray(values, dtype=np.float64)
        x = raw[np.isfinite(raw)]
        self.cur_missing += len(raw) - len(x)
        if len(x) == 0:
            return
        counts, below, above = _sorted_counts(self.edges, np.sort(x))
        self.cur += counts
        self.below += below
        self.above += above

    @property
    def n_ref(self) -> int:
        return int(self.ref.sum())

    @property
    def n_cur(self) -> int:
        return int(self.cur.sum())

    def n_values(self) -> int:
        """Distinct values in reference and current together, as the default choice counts them.

        Exact for values on the edges; a non-empty open cell counts as one more value (a lower
        bound), which only matters for columns whose reference has at most five values.
        """
        points = (self.ref[1::2] + self.cur[1::2]) > 0
        between = (self.ref[0::2] + self.cur[0::2]) > 0
        return int(points.sum() + between.sum())

    def as_categories(self) -> CategoricalCounts:
        """The column as a discrete one: each edge value a category, each occupied gap one more."""
        names: list[str] = []
        ref: list[int] = []
        cur: list[int] = []
        for cell in range(len(self.ref)):
            r, c = int(self.ref[cell]), int(self.cur[cell])
            if r == 0 and c == 0:
                continue
            j = cell // 2
            if cell % 2:
                names.append(f"{self.edges[j]:g}")
            elif j == 0:
                names.append(f"< {self.edges[0]:g}")
            elif j == len(self.edges):
                names.append(f"> {self.edges[-1]:g}")
            else:
                names.append(f"({self.edges[j - 1]:g}, {self.edges[j]:g})")
            ref.append(r)
            cur.append(c)
        return CategoricalCounts(
            self.name, names, np.array(ref), np.array(cur), self.ref_missing, self.cur_missing
        )

    def quantile_bins(self, n_bins: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Reference and current counts in `n_bins` bins cut at the reference's quantiles.

        Bin i is [edge, next edge); the bins are unions of cells, so the counts are exact.
        """
        cum = np.cumsum(self.ref)
        total = cum[-1]
        cuts = sorted(
            {int(np.searchsorted(cum, total * q / n_bins, side="left")) for q in range(1, n_bins)}
        )
        # A cut at cell c puts cells <= c to the left; cut right after a point cell, i.e.
        # before the next open cell, so each bin is [edge, next edge).
        bounds = sorted({c + 1 if c % 2 == 0 else c for c in cuts})
        bounds = [b for b in bounds if 0 < b < len(self.ref)]
        ref = np.add.reduceat(self.ref, [0, *bounds])
        cur = np.add.reduceat(self.cur, [0, *bounds])
        labels = []
        starts = [0, *bounds]
        for i, start in enumerate(starts):
            lo = "-inf" if start == 0 else f"{self.edges[start // 2]:.4g}"
            hi = "inf" if i + 1 == len(starts) else f"{self.edges[starts[i + 1] // 2]:.4g}"
            labels.append(f"[{lo}, {hi})")
        return ref, cur, labels


def _sorted_counts(edges: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Cell counts of sorted values, and their summed distances below e[0] and above e[-1].

    Sorting the batch and searching the edges in it costs about 10 ns a value; searching each
    value among 4,096 edges costs 70 (a branchy binary search per value).
    """
    n = len(x)
    left = np.searchsorted(x, edges, side="left")  # values < e[j]
    right = np.searchsorted(x, edges, side="right")  # values <= e[j]
    counts = np.empty(2 * len(edges) + 1, dtype=np.int64)
    counts[1::2] = right - left
    counts[0] = left[0]
    counts[2:-1:2] = left[1:] - right[:-1]
    counts[-1] = n - right[-1]
    below = float(left[0] * edges[0] - x[: left[0]].sum()) if left[0] else 0.0
    tail = n - right[-1]
    above = float(x[right[-1] :].sum() - tail * edges[-1]) if tail else 0.0
    return counts, below, above


@dataclass
class CategoricalCounts:
    """Counts per category of one column, in reference and current data."""

    name: str
    categories: list[str]
    ref: np.ndarray
    cur: np.ndarray
    ref_missing: int = 0
    cur_missing: int = 0

    @property
    def n_ref(self) -> int:
        return int(self.ref.sum())

    @property
    def n_cur(self) -> int:
        return int(self.cur.sum())

    def n_values(self) -> int:
        return int(((self.ref + self.cur) > 0).sum())


def category(value: object) -> str | None:
    """A value's category (None: missing). A number is named by its value, not its type: the
    reference CSV reads a code as int64 while serve logs it in the input's dtype (float32),
    and `3` and `3.0` must be one category. NaN and infinities are missing, as for numbers."""
    if value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
    return str(value)


class CategoricalAccumulator:
    """Builds CategoricalCounts from a reference and batches of current values."""

    def __init__(
        self, name: str, reference: Iterable[object], max_categories: int = MAX_CATEGORIES
    ) -> None:
        self.name = name
        self.max_categories = max_categories
        self.ref: dict[str, int] = {}
        self.ref_missing = 0
        for value in reference:
            key = category(value)
            if key is None:
                self.ref_missing += 1
            else:
                self.ref[key] = self.ref.get(key, 0) + 1
        if not self.ref:
            raise ValueError(f"reference column {name!r} has no values")
        self.cur: dict[str, int] = {}
        self.cur_missing = 0

    def add_counts(self, counts: Iterable[tuple[object, int]]) -> None:
        """Add (value, count) pairs of one batch (None is a missing value)."""
        for value, n in counts:
            key = category(value)
            if key is None:
                self.cur_missing += int(n)
                continue
            if key not in self.cur and key not in self.ref and len(self.cur) >= self.max_categories:
                key = OTHER
            self.cur[key] = self.cur.get(key, 0) + int(n)

    def counts(self) -> CategoricalCounts:
        names = sorted(set(self.ref) | set(self.cur))
        return CategoricalCounts(
            self.name,
            names,
            np.array([self.ref.get(k, 0) for k in names], dtype=np.int64),
            np.array([self.cur.get(k, 0) for k in names], dtype=np.int64),
            self.ref_missing,
            self.cur_missing,
        )
