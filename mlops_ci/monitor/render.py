"""Monitor verdicts for people and tools: terminal text, JSON, and Markdown (issue, summary).

Column names come from the deployed manifest and category values from production data, so
every such text is shown inside a code span with backticks removed and `@` defused: nothing a
request sends can become a mention, a link or HTML in an issue.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from mlops_ci import atomic
from mlops_ci.monitor.check import Verdict
from mlops_ci.monitor.decay import bounds_text
from mlops_ci.monitor.drift import ColumnDrift, DriftResult
from mlops_ci.report import escape
from mlops_ci.report.units import plural

#: GitHub refuses issue bodies over 65,536 characters; leave room for the marker and footer.
MAX_BODY = 60_000
CHARTS = 3


def to_json(verdicts: Sequence[Verdict], errors: Sequence[tuple[str, str]] = ()) -> str:
    doc: dict[str, Any] = {"models": [v.to_json() for v in verdicts]}
    if errors:
        doc["errors"] = [{"name": n, "error": e} for n, e in errors]
    return atomic.json_text(doc)


def text(verdicts: Sequence[Verdict], errors: Sequence[tuple[str, str]] = ()) -> str:
    lines = []
    for v in verdicts:
        head = "ATTENTION" if v.needs_attention else "ok"
        lines.append(f"{head:9}  {v.name} {v.version} (registry version {v.registry_version})")
        lines.append(f"           staleness: {v.staleness.status}, {v.staleness.reason}")
        if v.drift is not None:
            d = v.drift
            lines.append(
                f"           data drift: {len(d.drifted)} of {len(d.columns)} columns drifted "
                f"(share {d.share:.2f}, dataset drift at {d.share_threshold:g}) "
                f"on {d.rows:,} rows from {v.source}"
            )
            lines.extend(f"             {_column_line(c)}" for c in d.drifted)
        if v.prediction is not None:
            state = "drifted" if v.prediction_drift else "stable"
            lines.append(f"           predictions: {state}")
            lines.extend(f"             {_column_line(c)}" for c in v.prediction.drifted)
        if v.decay is not None:
            lines.append(f"           decay: {v.decay.rows} labelled rows")
            lines.extend(f"             {m.name}: {m.detail}" for m in v.decay.metrics)
        lines.extend(f"           ! {w}" for w in v.warnings())
    for name, error in errors:
        lines.append(f"{'ERROR':9}  {name}: {error}")
    bad = sum(v.needs_attention for v in verdicts)
    total = len(verdicts) + len(errors)
    # "1 of 3 models needs", "0 of 1 model needs", "2 of 3 models need"
    verb = "needs" if 1 in (bad, total) else "need"
    lines.append(
        f"{bad} of {plural(total, 'model')} {verb} attention"
        + (f", {len(errors)} could not be checked" if errors else "")
    )
    return "\n".join(lines)


def _column_line(c: ColumnDrift) -> str:
    if _no_values(c):
        return f"{c.name}: no values, all {c.missing_current:,} missing"
    op = "<" if c.score_kind == "p_value" else "≥"
    what = "p" if c.score_kind == "p_value" else c.test
    return f"{c.name}: {c.test} {what} = {c.score:.4g} {op} {c.threshold:g}"


def _no_values(c: ColumnDrift) -> bool:
    """Production rows came, with not one value in this column (drift.py calls it drifted)."""
    return c.n_current == 0 and c.missing_current > 0


# --- Markdown ------------------------------------------------------------------------------------


def code(value: object) -> str:
    """Untrusted text (a production value, a column name) as inert monospace, cut to 80
    characters: the one escaping rule of every report (`report.escape.code`)."""
    return escape.code(str(value)[:80])


def _mention(owner: str) -> str:
    # Owners come from the deployed (approved) manifest; the schema restricts their shape.
    return owner if owner.startswith("@") else f"@{owner}"


def issue_title(v: Verdict, registry: str | None = None) -> str:
    """The title; with the registry (its last 60 characters: where staging and production
    differ) so that two registries' issues of one model can be told apart in the list."""
    title = f"mlops-ci monitor: {v.name} needs attention"
    if registry:
        where = registry if len(registry) <= 60 else "…" + registry[-59:]
        title += f" in {where}"
    return title


def issue_body(
    v: Verdict, marker: str, run_url: str | None = None, registry: str | None = None
) -> str:
    owners = " ".join(_mention(o) for o in v.owners)
    parts = [
        marker,
        f"## {v.name} {v.version} needs attention",
        "",
        f"Owners: {owners}" if owners else "",
        "",
        *([f"Registry: {escape.code(registry)}", ""] if registry else []),
        f"Serving version: **{escape.cell(v.version)}** (registry version {v.registry_version}), "
        f"deployed {v.staleness.to_json()['deployed']}.",
        "",
        "### Verdicts",
        "",
        # Column, output and metric names and error texts come from the manifest, the reference
        # CSV and production data: shown inert, as everything else here.
        *[f"- ❌ {escape.cell(r)}" for r in v.reasons()],
        *[f"- ⚠️ {escape.cell(w)}" for w in v.warnings()],
        "",
        _staleness_md(v),
    ]
    if v.drift is not None:
        parts += ["", _drift_md("Data drift", v.drift, v.source)]
    if v.prediction is not None:
        parts += ["", _drift_md("Prediction drift", v.prediction, v.source)]
    if v.decay is not None:
        parts += ["", _decay_md(v)]
    parts += ["", _next_steps()]
    if run_url:
        parts += ["", f"Run: {run_url}"]
    body = "\n".join(parts).rstrip() + "\n"
    return _fit(body)


def healthy_comment(v: Verdict, run_url: str | None = None) -> str:
    line = f"✅ {v.name} {v.version} is healthy again: closing."
    return line + (f"\n\nRun: {run_url}" if run_url else "")


def _staleness_md(v: Verdict) -> str:
    s = v.staleness
    icon = {"stale": "❌", "warning": "⚠️", "fresh": "✅"}.get(s.status, "➖")
    return f"### Staleness\n\n{icon} {s.status}: {s.reason} (age {s.age_days:.0f} days)."


def _drift_md(title: str, d: DriftResult, source: str) -> str:
    lines = [
        f"### {title}",
        "",
        f"{len(d.drifted)} of {len(d.columns)} columns drifted (share {d.share:.2f}; the "
        f"dataset drifts at {d.share_threshold:g}), {d.rows:,} production rows from "
        f"{code(source)}, correction: {d.correction}.",
        "",
        "| column | test | statistic | threshold | drifted | reference → current |",
        "|---|---|---|---|---|---|",
    ]
    ordered = sorted(d.columns, key=lambda c: (not c.drifted, c.name))
    for c in ordered:
        stat = f"{c.score:.4g}" + (f" ± {c.error_bound:.2g}" if c.error_bound > 0 else "")
        if _no_values(c):
            stat = f"no values ({c.missing_current:,} missing)"
        op = "p <" if c.score_kind == "p_value" else "≥"
        lines.append(
            f"| {code(c.name)} | {c.test} | {stat} | {op} {c.threshold:g} | "
            f"{'❌ yes' if c.drifted else 'no'} | {_summary(c)} |"
        )
    charts = sorted(d.drifted, key=_severity, reverse=True)[:CHARTS]
    for c in charts:
        lines += ["", _chart(c)]
    return "\n".join(lines)


def _severity(c: ColumnDrift) -> float:
    return -c.score if c.score_kind == "p_value" else c.score / max(c.threshold, 1e-12)


def _summary(c: ColumnDrift) -> str:
    """The bin whose share moved most: where reference and current differ."""
    if not c.bins:
        return ""
    moved = max(range(len(c.bins)), key=lambda i: abs(c.current_shares[i] - c.reference_shares[i]))
    return f"{code(c.bins[moved])}: {c.reference_shares[moved]:.1%} → {c.current_shares[moved]:.1%}"


def _chart(c: ColumnDrift) -> str:
    """A Mermaid bar (reference) and line (current) chart; GitHub renders it in issues."""
    labels = ", ".join('"' + _label(b) + '"' for b in c.bins)
    ref = ", ".join(f"{x:.4f}" for x in c.reference_shares)
    cur = ", ".join(f"{x:.4f}" for x in c.current_shares)
    top = max([*c.reference_shares, *c.current_shares, 0.01])
    return "\n".join(
        [
            # Markdown does not render inside <summary>: plain, escaped text there.
            f"<details><summary>{html.escape(_label(c.name))}: reference (bars) against "
            "current (line)</summary>",
            "",
            "```mermaid",
            "xychart-beta",
            f'    title "{_label(c.name)}"',
            f"    x-axis [{labels}]",
            f'    y-axis "share of rows" 0 --> {min(1.0, top * 1.1):.3f}',
            f"    bar [{ref}]",
            f"    line [{cur}]",
            "```",
            "</details>",
        ]
    )


def _label(text: str) -> str:
    return "".join(ch for ch in str(text) if ch.isalnum() or ch in " .,-_()[]<>:+")[:24]


def _decay_md(v: Verdict) -> str:
    assert v.decay is not None
    lines = [
        "### Decay",
        "",
        f"{v.decay.rows:,} labelled production rows.",
        "",
        "| metric | value | threshold | ok |",
        "|---|---|---|---|",
    ]
    for m in v.decay.metrics:
        bound = bounds_text(m.min, m.max)
        value = "–" if m.value is None else f"{m.value:.4g}"
        lines.append(f"| {code(m.name)} | {value} | {bound} | {'✅' if m.ok else '❌'} |")
    return "\n".join(lines)


def _next_steps() -> str:
    return (
        "### What to do\n\n"
        "Retrain on recent data (or extend `refresh_by`), raise `metadata.version`, and open a "
        "pull request: the checks and the gate run as for any change, and the merge deploys "
        "it. This issue updates on every scheduled run and closes itself once the model is "
        "healthy. See docs/monitoring.md."
    )


_ROW = "| " + code("")[: len("<code>")]


def _fit(body: str) -> str:
    """Keep within GitHub's body limit: drop table rows from the end, say how many."""
    if len(body) <= MAX_BODY:
        return body
    lines = body.split("\n")
    excess = len(body) - (MAX_BODY - 200)
    left_out: set[int] = set()
    # a table row of a column or metric: its first cell is a name, shown by `code`
    for i in reversed([i for i, line in enumerate(lines) if line.startswith(_ROW)]):
        if excess <= 0:
            break
        left_out.add(i)
        excess -= len(lines[i]) + 1
    if excess > 0:
        lines, left_out = [body[: MAX_BODY - 200]], set()
    kept = [line for i, line in enumerate(lines) if i not in left_out]
    kept.append(
        f"\n_{len(left_out)} table rows left out to fit GitHub's limit; see the run's JSON._"
    )
    return "\n".join(kept)


#: The runner drops a step's job summary over 1 MiB whole (it counts bytes): stay below it.
SUMMARY_BYTES = 1_000_000


def summary(verdicts: Sequence[Verdict], errors: Sequence[tuple[str, str]] = ()) -> str:
    """The job summary: one row per model; past the runner's limit (a registry of thousands),
    the models that need someone first, then as many healthy ones as fit."""
    head = [
        "### mlops-ci monitor",
        "",
        "| model | version | verdict | stale | drifted columns | predictions | decay |",
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[bool, str]] = []
    for v in verdicts:
        drifted = f"{len(v.drift.drifted)}/{len(v.drift.columns)}" if v.drift else "–"
        rows.append(
            (
                v.needs_attention,
                f"| {code(v.name)} | {escape.cell(v.version)} | "
                f"{'❌ needs attention' if v.needs_attention else '✅ ok'} | "
                f"{v.staleness.status} | {drifted} | "
                f"{'drifted' if v.prediction_drift else ('stable' if v.prediction else '–')} | "
                f"{'decayed' if v.decayed else ('ok' if v.decay else '–')} |",
            )
        )
    for name, error in errors:
        rows.append((True, f"| {code(name)} | – | ⚠️ {code(error)} | | | | |"))
    text = "\n".join([*head, *(row for _, row in rows)]) + "\n"
    if len(text.encode("utf-8", errors="replace")) <= SUMMARY_BYTES:
        return text
    budget = SUMMARY_BYTES - 200 - len("\n".join(head).encode("utf-8", errors="replace"))
    kept: list[str] = []
    for _, row in sorted(rows, key=lambda r: not r[0]):  # stable: the registry's order within
        budget -= len(row.encode("utf-8", errors="replace")) + 1
        if budget < 0:
            break
        kept.append(row)
    left_out = plural(len(rows) - len(kept), "more model")
    return "\n".join([*head, *kept, "", f"… {left_out} not listed here: `--format json` has all."])
