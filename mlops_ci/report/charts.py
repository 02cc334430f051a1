"""The report's charts: Mermaid `xychart-beta` blocks, which GitHub draws in comments and job
summaries. Only numbers and fixed words go into a chart: no text from a pull request reaches
Mermaid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlops_ci.report import units

# Mermaid's default bar colour is a pale lavender that vanishes on GitHub's white; a strong blue
# for the bars, red for a reference line, a compact size, and each bar's value written on it.
_CHART_STYLE = (
    '%%{init: {"xyChart": {"width": 640, "height": 300, "showDataLabel": true}, '
    '"themeVariables": {"xyChart": {"plotColorPalette": "#0969da, #cf222e"}}}}%%'
)


def _mermaid(
    title: str, labels: Sequence[str], axis: str, bars: Sequence[float], extra: str = ""
) -> str:
    top = max(bars) * 1.15
    lines = [
        "```mermaid",
        _CHART_STYLE,
        "xychart-beta",
        f'    title "{title}"',
        "    x-axis [" + ", ".join(f'"{label}"' for label in labels) + "]",
        f'    y-axis "{axis}" 0 --> {_short(top)}',
        "    bar [" + ", ".join(_short(v) for v in bars) + "]",
    ]
    if extra:
        lines.append(f"    {extra}")
    return "\n".join([*lines, "```"])


def _size(doc: Mapping[str, Any]) -> int | None:
    size = doc.get("batch_size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _short(v: float) -> str:
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


def speedup(measurements: Iterable[Mapping[str, Any]]) -> str | None:
    """ONNX over native, per batch size: how many times the throughput (native mean latency ÷
    ONNX mean latency), with a line at ×1 where they are equal. None without both engines."""
    throughput: dict[tuple[str, int], float] = {}
    for m in measurements:
        value, size = units.finite(m.get("throughput")), _size(m)
        if value and size is not None:
            throughput[(str(m.get("engine")), size)] = value
    sizes = sorted(s for (e, s) in throughput if e == "onnx" and ("native", s) in throughput)
    if not sizes:
        return None
    ratios = [throughput[("onnx", s)] / throughput[("native", s)] for s in sizes]
    # the break-even line matters only where ONNX is near it; beside ×80 it is noise at the floor
    even = "line [" + ", ".join("1" for _ in sizes) + "]" if min(ratios) < 3 else ""
    return _mermaid(
        "ONNX speed-up over native (×, higher is better)",
        # the value in the label too: a short bar beside a tall one still reads exactly
        [f"batch {s}: {units.ratio(r)}" for s, r in zip(sizes, ratios, strict=True)],
        "× native throughput",
        ratios,
        extra=even,
    )


def latency_beside_deployed(regressions: Iterable[Mapping[str, Any]]) -> str | None:
    """p50 latency at batch 1 (else the smallest batch), this change beside the deployed
    version, both from the same interleaved run. None without a comparison."""
    paired = [
        x
        for x in regressions
        if units.finite(x.get("candidate_p50_ms")) and units.finite(x.get("baseline_p50_ms"))
    ]
    if not paired:
        return None
    x = min(paired, key=lambda x: _size(x) or 0)
    bars = [float(x["baseline_p50_ms"]) * 1e3, float(x["candidate_p50_ms"]) * 1e3]
    return _mermaid(
        f"p50 latency at batch {_size(x) or '?'} (µs, lower is better)",
        [
            f"deployed: {units.microseconds(x['baseline_p50_ms'])}",
            f"this change: {units.microseconds(x['candidate_p50_ms'])}",
        ],
        "µs",
        bars,
    )
