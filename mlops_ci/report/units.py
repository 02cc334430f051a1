"""Numbers as a reviewer reads them: one unit per quantity, everywhere.

Latency is in microseconds, throughput in rows per second, where throughput is always
`batch size / mean latency of one call` (the `throughput` field `bench` records): the rows a
stream of back-to-back calls gets through in a second.
"""

from __future__ import annotations

import math
from typing import Any


def plural(n: int, word: str) -> str:
    """`1 record`, `2 records`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool), else None."""
    if type(value) is float:  # the common case first: the catalog asks this of every number
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float (JSON sets no limit on digits)
        return None
    return number if math.isfinite(number) else None


def number(value: Any, digits: int = 4) -> str:
    """A plain number with `digits` significant digits; `–` when there is none."""
    v = finite(value)
    return "–" if v is None else f"{v:.{digits}g}"


def microseconds(ms: Any) -> str:
    """A latency given in milliseconds, shown in µs: `4.87 µs`, `48.7 µs`, `1,234 µs`."""
    v = finite(ms)
    if v is None:
        return "–"
    us = v * 1e3
    if us < 10:
        return f"{us:.2f} µs"
    if us < 100:
        return f"{us:.1f} µs"
    return f"{us:,.0f} µs"


def rows_per_second(value: Any) -> str:
    """A throughput: `812 rows/s`, `45.3 k rows/s`, `2.0 M rows/s`."""
    v = finite(value)
    if v is None:
        return "–"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            scaled = v / scale
            return (
                f"{scaled:.1f} {prefix} rows/s" if scaled < 100 else f"{scaled:.0f} {prefix} rows/s"
            )
    return f"{v:.0f} rows/s"


def ratio(value: Any, digits: int = 3) -> str:
    """A ratio of two measurements: `×1.04`."""
    v = finite(value)
    return "–" if v is None else f"×{v:.{digits}g}"
