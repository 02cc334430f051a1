"""Inline SVG charts for the catalog, drawn in Python: no JavaScript, no CDN, no third party.

Every text that reaches the SVG is escaped here; colours and fonts come from the page's CSS
classes (`chart`, `s0`..`s3`, `limit`, `bad`), so the SVG carries no style attributes that a
strict Content-Security-Policy would block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import escape as _html_escape

from markupsafe import Markup

#: Text escaped for SVG, cached: labels such as "v3 (1.2.0)" or a column's name recur on every
#: model's charts.
escape = lru_cache(maxsize=65536)(_html_escape)

#: Most x labels an axis shows before it thins them out; the rest stay in each point's tooltip.
_MAX_X_LABELS = 8


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    #: Points to draw as failing (e.g. a drifted column in that run), by index.
    bad: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Limit:
    """A horizontal threshold line, e.g. `min 0.65` or `threshold 0.1`."""

    label: str
    value: float


_WIDEST, _FINEST = 1e300, 1e-290


def nice_ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    # Floats at their limits: past ±1e300 the padding and the round ends overflow, and a span
    # under 1e-290 has a fifth that is 0 (no step, no log). The axis stops at ±1e300 (a value
    # beyond is drawn off it), and so small a span reads as one value.
    lo, hi = (min(max(v, -_WIDEST), _WIDEST) for v in (lo, hi))
    if hi - lo < _FINEST:
        pad = abs(lo) * 0.1 if abs(lo) > _FINEST else 1.0
        lo, hi = lo - pad, hi + pad
    span = hi - lo
    magnitude = 10 ** math.floor(math.log10(span / count))
    step = magnitude
    for multiple in (1, 2, 2.5, 5, 10):
        step = multiple * magnitude
        if span / step <= count:
            break
    start = math.floor(lo / step + 1e-9) * step
    end = math.ceil(hi / step - 1e-9) * step
    n = round((end - start) / step)
    return [start + i * step for i in range(n + 1)], step


# Cached: a catalog's charts show the same ticks and values many times over. The result holds
# only digits, ",", ".", "-", "e" and "+", so it needs no escaping in SVG.
@lru_cache(maxsize=8192)
def format_number(value: float, step: float | None = None) -> str:
    """A tick or value label: as many decimals as the step needs; thousands separated. A number
    that would take more than `_LONGEST` characters so (1e300 has 401) is written with an
    exponent, with as many digits as the step needs: a label must fit the axis and a cell."""
    if step is None:
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1e12:
            return f"{value:.3g}"
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 1:
            return f"{value:.3g}" if magnitude < 100 else f"{value:.0f}"
        return f"{value:.3g}"
    exponent = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -exponent)
    if exponent <= 0 and not math.isclose(step / 10**exponent % 1, 0, abs_tol=1e-6):
        decimals += 1  # a step of 0.25 or 2.5 needs one more digit than 0.2 or 2
    text = f"{value:,.{decimals}f}"
    if len(text) <= _LONGEST:
        return text
    lead = math.floor(math.log10(abs(value))) if value else exponent
    return f"{value:.{min(17, max(1, lead - exponent + 2))}g}"


#: The longest label written out in full (`-999,999,999,999` or `0.0000001234`).
_LONGEST = 16


def _thin(labels: Sequence[str]) -> list[int]:
    if len(labels) <= _MAX_X_LABELS:
        return list(range(len(labels)))
    every = math.ceil(len(labels) / _MAX_X_LABELS)
    shown = list(range(0, len(labels), every))
    if shown[-1] != len(labels) - 1:
        shown[-1] = len(labels) - 1  # the newest always shows
    return shown


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    unit: str,
    *,
    limits: Sequence[Limit] = (),
    from_zero: bool = False,
    width: int = 520,
    height: int = 220,
    ident: str = "c",
) -> Markup:
    """A line chart with points, a y axis in `unit`, threshold lines and a legend."""
    values = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    values += [limit.value for limit in limits if math.isfinite(limit.value)]
    if not values or not x_labels:
        return Markup('<p class="muted">No data to chart.</p>')
    lo, hi = min(values), max(values)
    if from_zero:
        lo = min(0.0, lo)
    ticks, step = nice_ticks(lo, hi)
    y0, y1 = ticks[0], ticks[-1]
    left, right, top = 58, 12, 36
    bottom = 40 if len(series) < 2 else 56
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(x_labels)

    # Points sit inside the frame by half a label's width, so the first and last labels fit.
    inset = min(plot_w / 4, max(len(label) for label in x_labels) * 3.2 + 4)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else inset + (plot_w - 2 * inset) * i / (n - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - y0) / ((y1 - y0) or 1))

    title_id = f"{ident}-t"
    # Each text is escaped once, not once per point that shows it.
    labels = [escape(label) for label in x_labels]
    unit_text = escape(unit)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="{title_id}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{title_id}">{escape(title)}</title>',
        f'<text class="ctitle" x="{left}" y="16">{escape(title)}</text>',
    ]
    # The grid is one path (an element per line would cost a page of 7 charts ~40 elements).
    rows = [(y(tick), format_number(tick, step)) for tick in ticks]
    grid = "".join(f"M{left} {ty:.1f}H{width - right}" for ty, _ in rows)
    out.append(f'<path class="grid" d="{grid}"/>')
    out += [
        f'<text class="ytick" x="{left - 6}" y="{ty + 4:.1f}">{text}</text>' for ty, text in rows
    ]
    out.append(
        f'<text class="unit" x="12" y="{top + plot_h / 2:.1f}" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{unit_text}</text>'
    )
    for i in _thin(x_labels):
        out.append(f'<text class="xtick" x="{x(i):.1f}" y="{top + plot_h + 16}">{labels[i]}</text>')
    for limit in limits:
        ly = y(limit.value)
        out.append(
            f'<line class="limit" x1="{left}" x2="{width - right}" y1="{ly:.1f}" y2="{ly:.1f}"/>'
            f'<text class="limitlabel" x="{left + 4}" y="{ly - 4:.1f}">'
            f"{escape(limit.label)} {format_number(limit.value)}</text>"
        )
    for k, s in enumerate(series):
        cls = f"s{k % 4}"
        name = escape(s.name)
        points = [
            (i, x(i), y(v), v) for i, v in enumerate(s.values) if v is not None and math.isfinite(v)
        ]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for _, px, py, _ in points)
            out.append(f'<polyline class="line {cls}" points="{path}"/>')
        for i, px, py, v in points:
            bad = " bad" if i in s.bad else ""
            tip = f"{name} · {labels[i]}: {format_number(v)} {unit_text}".strip()
            out.append(
                f'<circle class="pt {cls}{bad}" cx="{px:.1f}" cy="{py:.1f}" r="3.5">'
                f"<title>{tip}</title></circle>"
            )
    if len(series) > 1:
        lx = left
        for k, s in enumerate(series):
            ly = height - 12
            out.append(
                f'<rect class="key s{k % 4}" x="{lx}" y="{ly - 9}" width="10" height="10"/>'
                f'<text class="legend" x="{lx + 14}" y="{ly}">{escape(s.name)}</text>'
            )
            lx += 24 + 7 * len(s.name)
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above went through escape()


@dataclass(frozen=True)
class Cell:
    """One column in one monitor run: its statistic against its threshold."""

    value: float | None
    threshold: float | None
    drifted: bool


#: Most monitor runs a heatmap shows (the newest); older ones stay in catalog.json.
MAX_HEAT_RUNS = 12


def _heat_class(cell: Cell) -> str:
    if cell.value is None:
        return "h-none"
    if cell.threshold is None or cell.threshold <= 0:
        return "h2" if cell.drifted else "h0"
    ratio = cell.value / cell.threshold
    if cell.drifted:
        return "h3" if ratio >= 2 else "h2"
    return "h1" if ratio >= 0.5 else "h0"


def heatmap(
    title: str,
    rows: Sequence[str],
    columns: Sequence[str],
    cells: Sequence[Sequence[Cell | None]],
    *,
    ident: str = "h",
) -> Markup:
    """Rows (data columns) × columns (monitor runs): each cell holds the drift statistic,
    shaded by how close it is to its threshold; drifted cells are red."""
    if not rows or not columns:
        return Markup('<p class="muted">No drift statistics to show.</p>')
    if len(columns) > MAX_HEAT_RUNS:
        columns = columns[-MAX_HEAT_RUNS:]
        cells = [row[-MAX_HEAT_RUNS:] for row in cells]
        title += f" (newest {MAX_HEAT_RUNS} runs)"
    label_w = min(180, 16 + 7 * max(len(r) for r in rows))
    column_texts = [escape(column) for column in columns]
    cell_w, cell_h, top = 72, 22, 48
    width = max(label_w + cell_w * len(columns) + 12, 380)  # the legend's width at least
    height = top + cell_h * len(rows) + 34
    title_id = f"{ident}-t"
    out = [
        f'<svg class="chart heat" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-labelledby="{title_id}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{title_id}">{escape(title)}</title>',
        f'<text class="ctitle" x="8" y="16">{escape(title)}</text>',
    ]
    for j, column_text in enumerate(column_texts):
        out.append(
            f'<text class="xtick" x="{label_w + cell_w * j + cell_w / 2:.0f}" y="{top - 8}">'
            f"{column_text}</text>"
        )
    for i, (row, row_cells) in enumerate(zip(rows, cells, strict=True)):
        y = top + cell_h * i
        row_text = escape(row)
        out.append(f'<text class="rowlabel" x="{label_w - 8}" y="{y + 15}">{row_text}</text>')
        for j, cell in enumerate(row_cells):
            x = label_w + cell_w * j
            if cell is None:
                out.append(f'<rect class="h-none" x="{x}" y="{y}" width="{cell_w - 2}" '
                           f'height="{cell_h - 2}"/>')  # fmt: skip
                continue
            shown = "–" if cell.value is None else format_number(cell.value)
            limit = (
                "" if cell.threshold is None else f" (threshold {format_number(cell.threshold)})"
            )
            # Every part is escaped (names above) or a formatted number.
            tip = f"{row_text} · {column_texts[j]}: {shown}{limit}"
            out.append(
                f'<rect class="{_heat_class(cell)}" x="{x}" y="{y}" width="{cell_w - 2}" '
                f'height="{cell_h - 2}"><title>{tip}{" · drifted" if cell.drifted else ""}'
                f'</title></rect><text class="hval{" on" if cell.drifted else ""}" '
                f'x="{x + cell_w / 2 - 1:.0f}" y="{y + 15}">{shown}</text>'
            )
    ly = height - 12
    lx = 8.0
    for cls, text in (
        ("h0", "< ½ threshold"),
        ("h1", "< threshold"),
        ("h2", "drifted"),
        ("h3", "≥ 2× threshold"),
    ):
        out.append(
            f'<rect class="{cls}" x="{lx:.0f}" y="{ly - 9}" width="10" height="10"/>'
            f'<text class="legend" x="{lx + 14:.0f}" y="{ly}">{escape(text)}</text>'
        )
        lx += 24 + 6.5 * len(text)
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above went through escape()
