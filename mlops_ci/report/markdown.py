"""Markdown for people on GitHub: the validation summary and the model report (sticky comment,
job summary, `run`'s report.md), with Mermaid charts. Summarised step by step to fit a limit.

Every piece of text that came from a pull request goes through `escape.cell` / `escape.code`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlops_ci.manifest import Checked
from mlops_ci.report import charts, units
from mlops_ci.report.escape import MARKER, cell, code
from mlops_ci.report.results import ModelReport, validate_entry, validate_status

if TYPE_CHECKING:
    from mlops_ci.convert import ConvertResult
    from mlops_ci.policy import Decision
    from mlops_ci.report.terminal import Pull

_ICON = {"pass": "✅", "fail": "❌", "skip": "➖", None: "·"}
LEGEND = "<sub>✅ passed, ❌ failed, ➖ skipped, <b>·</b> not run</sub>"

#: Who the report is for: a pull request ("3 models changed") or a local `run` ("3 models").
Context = Literal["pull request", "local"]


# --- validate ---------------------------------------------------------------------------------


def validation(results: Sequence[Checked]) -> str:
    """The job summary of `mlops-ci validate --format github`."""
    bad = [r for r in results if not r.valid]
    head = "### mlops-ci validate\n\n"
    if not bad:
        head += f"✅ {units.plural(len(results), 'manifest')} valid\n\n"
    else:
        head += f"❌ {len(bad)} of {units.plural(len(results), 'manifest')} invalid\n\n"
    rows = ["| Manifest | Model | Result |", "|---|---|---|"]
    for r in results:
        name = r.name or ""
        verdict = "✅ valid" if r.valid else f"❌ {units.plural(len(r.problems), 'problem')}"
        rows.append(f"| {code(r.shown)} | {cell(name)} | {verdict} |")
    out = head + "\n".join(rows) + "\n"
    if bad:
        out += "\n| Where | Problem |\n|---|---|\n"
        for r in bad:
            for p in r.problems:
                where = code(f"{r.shown}:{p.line}" if p.line else r.shown)
                out += f"| {where} | {cell(p.message)} |\n"
    return out


# --- the governance gate ----------------------------------------------------------------------


def gate(decision: Decision, pull: Pull) -> str:
    """The gate's job summary: per model, who approved and what is still missing."""
    icon = "✅" if decision.approved else "❌"
    verdict = "approved" if decision.approved else "not approved"
    out = [
        f"## {icon} Governance gate: {verdict}",
        "",
        f"Pull request #{pull.number}, head {code(pull.head_sha[:12])}; policy: "
        f"{cell(decision.policy_source)} as of base {code(pull.base_sha[:12])}.",
        "",
    ]
    if not decision.outcomes:
        out.append(cell(decision.reason))
    else:
        out += ["| | Model | Risk | Approved by | Still missing |", "|---|---|---|---|---|"]
        for o in decision.outcomes:
            # logins as GitHub spells them (letters, digits, '-', "[bot]"): nothing to escape
            who = ", ".join(f"@{a}" for a in o.approvers) or "—"
            missing = "<br>".join(cell(m) for m in o.missing) or "—"
            mark = "✅" if o.approved else "❌"
            out.append(f"| {mark} | {code(o.name)} | {cell(o.tier)} | {who} | {missing} |")
        notes = [f"- {code(o.name)}: {cell(n)}" for o in decision.outcomes for n in o.notes]
        if notes:
            out += ["", "**Notes**", "", *notes]
    if decision.ignored:
        out += ["", "<details><summary>Reviews not counted</summary>", ""]
        out += [f"- {cell(i)}" for i in decision.ignored]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


# --- the model report: levels of detail ---------------------------------------------------------


@dataclass(frozen=True)
class _Detail:
    """How much to show for one model: each step of summarising drops a level of detail."""

    checks: str = "all"  # all | failing
    bench_table: bool = True
    chart: bool = True
    max_items: int | None = None


_FULL = _Detail()
_LEVELS: tuple[tuple[str, Callable[[ModelReport], _Detail | None]], ...] = (
    ("full", lambda r: _FULL),
    ("passing models as table rows only", lambda r: None if r.passed else _FULL),
    (
        "failing models without charts and benchmark tables",
        lambda r: None if r.passed else _Detail("failing", bench_table=False, chart=False),
    ),
    (
        "at most 10 failing checks per model",
        lambda r: (
            None if r.passed else _Detail("failing", bench_table=False, chart=False, max_items=10)
        ),
    ),
    ("the table only", lambda r: None),
)


def render(
    reports: Sequence[ModelReport],
    *,
    limit: int | None = None,
    details_url: str | None = None,
    context: Context = "pull request",
    size: Callable[[str], int] = len,
) -> str:
    """The Markdown report, starting with the sticky-comment marker.

    With `limit`, detail is dropped step by step (passing models first, then charts, then
    passing checks) until the text fits; as a last resort the table lists as many models as fit
    and says how many it left out. `details_url` (the workflow run) is linked when summarised.
    `size` measures the text against `limit`: characters (a comment), or `utf8_bytes` (a job
    summary, whose limit is in bytes: a CJK character is three).
    """
    ordered = sorted(reports, key=lambda r: (r.passed, r.model))
    for i, (label, detail_for) in enumerate(_LEVELS):
        note = None if i == 0 else label
        text = _document(ordered, detail_for, note=note, details_url=details_url, context=context)
        if limit is None or size(text) <= limit:
            return text

    # even the bare table is too long: list as many models as fit (failing ones come first)
    def table_of(keep: int) -> str:
        return _document(
            ordered[:keep],
            lambda r: None,
            note="the table only",
            details_url=details_url,
            context=context,
            left_out=len(ordered) - keep,
        )

    fits, too_many = 0, len(ordered)
    while too_many - fits > 1:  # binary search: table_of(fits) fits, table_of(too_many) not
        middle = (fits + too_many) // 2
        if size(table_of(middle)) <= (limit or 0):
            fits = middle
        else:
            too_many = middle
    return table_of(fits)


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", errors="replace"))


def _headline(reports: Sequence[ModelReport], total: int, context: Context) -> str:
    failing = sum(not r.passed for r in reports)
    models = units.plural(total, "model") + (" changed" if context == "pull request" else "")
    if failing:
        return f"**{models}: ❌ {failing} failing, ✅ {len(reports) - failing} passing**"
    return f"**{models}: ✅ all passing**"


def _document(
    reports: Sequence[ModelReport],
    detail_for: Callable[[ModelReport], _Detail | None],
    *,
    note: str | None,
    details_url: str | None,
    context: Context,
    left_out: int = 0,
) -> str:
    parts = [MARKER, "## mlops-ci report", "", _headline(reports, len(reports) + left_out, context)]
    parts.append("")
    if note:
        where = (
            f"[the workflow run]({details_url})" if details_url else "the workflow run's summary"
        )
        parts.append(
            f"> [!NOTE]\n> Summarised to fit GitHub's comment limit ({note}); "
            f"the full report is in {where}."
        )
        parts.append("")
    parts.append(_table(reports))
    parts.append("")
    parts.append(LEGEND)
    if left_out:
        parts.append(f"\n… and {units.plural(left_out, 'more model')} not listed here.")
    for r in reports:
        detail = detail_for(r)
        if detail is not None:
            parts.append(_model_section(r, detail))
    return "\n".join(parts).rstrip("\n") + "\n"


# --- the table ----------------------------------------------------------------------------------


def _table(reports: Sequence[ModelReport]) -> str:
    rows = [
        "| Model | Version | Validate | Convert & parity | Tests | Bench | vs deployed |",
        "|---|---|:-:|:-:|:-:|:-:|:-:|",
    ]
    for r in reports:
        st = r.stages()
        rows.append(
            f"| {code(r.model)} | {cell(r.version)} | {_ICON[st['validate']]} "
            f"| {_ICON[st['convert']]} | {_tests_cell(r)} | {_bench_cell(r.bench)} "
            f"| {_regression_cell(r.bench)} |"
        )
    return "\n".join(rows)


def _own_checks(r: ModelReport) -> list[Mapping[str, Any]]:
    """The test stage's checks, without the parity verdict when the conversion shows it: a
    parity failure is counted once, under conversion."""
    checks = _entries(r.test, "checks")
    if r.convert is not None:
        checks = [c for c in checks if c.get("kind") != "parity"]
    return checks


def _tests_cell(r: ModelReport) -> str:
    if r.test is None:
        return _ICON[None]
    checks = _own_checks(r)
    failed = sum(c.get("status") == "fail" for c in checks)
    passed = sum(c.get("status") == "pass" for c in checks)
    if failed:
        return f"❌ {failed} of {failed + passed} failed"
    return f"✅ {passed}" if passed else _ICON["skip"]


def _entries(doc: Mapping[str, Any] | None, key: str) -> list[Mapping[str, Any]]:
    """The objects of a list in a stage document (a fork's run writes those documents: anything
    else in the list is skipped, never a crash of the base repository's report)."""
    value = (doc or {}).get(key)
    return [x for x in value if isinstance(x, Mapping)] if isinstance(value, list) else []


def _bench_cell(doc: Mapping[str, Any] | None) -> str:
    if doc is None:
        return _ICON[None]
    onnx = [m for m in _entries(doc, "measurements") if m.get("engine") == "onnx"]
    first = min(onnx, key=lambda m: units.finite(m.get("batch_size")) or 0, default=None)
    failed = [b for b in _entries(doc, "budgets") if not b.get("passed")]
    icon = "❌" if failed else "✅"
    if first is None:
        return icon
    return (
        f"{icon} p50 {units.microseconds(first.get('p50_ms'))} "
        f"at batch {cell(first.get('batch_size'))}"
    )


def _regression_cell(doc: Mapping[str, Any] | None) -> str:
    regressions = _entries(doc, "regression")
    if not regressions:
        return _ICON[None]
    worst = max(regressions, key=lambda r: units.finite(r.get("ci_low")) or 0)
    icon = "❌" if any(not r.get("passed") for r in regressions) else "✅"
    return f"{icon} {units.ratio(worst.get('ratio'))}"


# --- one model's section ----------------------------------------------------------------------

Section = Callable[[ModelReport, _Detail], list[str]]


def _model_section(r: ModelReport, d: _Detail) -> str:
    icon = "✅" if r.passed else "❌"
    opened = "" if r.passed else " open"
    out = [
        "",
        f"<details{opened}><summary><b>{icon} {cell(r.model)} {cell(r.version)}</b>"
        + (f" · {code(r.manifest)}" if r.manifest else "")
        + "</summary>",
        "",
    ]
    out += [f"❌ unreadable report: {cell(problem)}" for problem in r.unreadable]
    for section in SECTIONS:
        out += section(r, d)
    out += ["", "</details>"]
    return "\n".join(out)


def _validation_md(r: ModelReport, d: _Detail) -> list[str]:
    doc = r.validate
    if doc is None:
        return []
    lines = ["#### Validation", ""]
    if validate_status(doc) == "pass":
        return [*lines, "✅ manifest valid", ""]
    errors = _entries(validate_entry(doc), "errors")
    limit = d.max_items or len(errors)
    for e in errors[:limit]:
        where = f"line {e['line']}: " if isinstance(e.get("line"), int) else ""
        lines.append(f"- ❌ {where}{cell(e.get('message', ''))}")
    if len(errors) > limit:
        lines.append(f"- … {len(errors) - limit} more")
    return [*lines, ""]


def _convert_md(r: ModelReport, d: _Detail) -> list[str]:
    doc = r.convert
    if doc is None:
        return []
    lines = ["#### Conversion and parity", ""]
    onnx: Mapping[str, Any] = doc["onnx"] if isinstance(doc.get("onnx"), Mapping) else {}
    if doc.get("error"):
        lines.append(f"❌ {cell(doc['error'])}")
    elif onnx:
        facts = [
            f"{label}{cell(onnx[key])}"
            for key, label in (("converter", ""), ("opset", "opset "), ("checker", "checker "))
            if onnx.get(key) is not None
        ]
        icon = "✅" if onnx.get("checker") == "passed" else "❌"
        lines.append(f"{icon} converted: " + ", ".join(facts))
    signature: Mapping[str, Any] = (
        doc["signature"] if isinstance(doc.get("signature"), Mapping) else {}
    )
    lines += [f"- ❌ signature: {cell(p)}" for p in _list(signature.get("problems"))]
    parity = doc.get("parity")
    if isinstance(parity, Mapping):
        model = _mapping(doc.get("model"))
        lines += ["", *parity_md(parity, given_as_onnx=model.get("framework") == "onnx", d=d)]
    return [*lines, ""]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def conversion(result: ConvertResult) -> str:
    """`convert.md`: the conversion section of one model, as the report shows it."""
    doc = result.to_json()
    icon = "✅" if result.passed else "❌"
    head = (
        f"### {icon} Conversion: {code(result.name)} {cell(result.version)} "
        f"({cell(result.framework)})"
    )
    body = _convert_md(ModelReport.from_docs(convert=doc), _FULL)[2:]  # without its heading
    if result.notes:
        body += ["Notes: " + "; ".join(cell(n) for n in result.notes), ""]
    return "\n".join([head, "", *body]).rstrip("\n") + "\n"


def _value(v: Any) -> str:
    """A parity value with enough significant digits to see where two of them differ."""
    if isinstance(v, list):
        shown = ", ".join(_value(x) for x in v[:6])
        return f"[{shown}{', …' if len(v) > 6 else ''}]"
    if isinstance(v, float):
        return f"{v:.9g}"
    return cell(v)


def parity_md(
    parity: Mapping[str, Any], *, given_as_onnx: bool = False, d: _Detail = _FULL
) -> list[str]:
    """The parity verdict: on failure the tolerance, each output, and the worst rows."""
    status = str(parity.get("status"))
    if given_as_onnx:
        return ["➖ parity: given as ONNX, nothing to compare"]
    if status not in ("passed", "failed"):
        return [f"➖ parity not run: {cell(parity.get('reason') or 'no reason given')}"]
    tol = _mapping(parity.get("tolerances"))
    outputs = _entries(parity, "outputs")
    rows = f"{cell(parity.get('rows'))} rows of {code(parity.get('data') or 'data')}"
    rule = (
        f"|native − ONNX| ≤ {units.number(tol.get('atol'))} + "
        f"{units.number(tol.get('rtol'))} × |native|"
    )
    agreement = units.finite(tol.get("min_label_agreement"))
    if agreement is not None:
        rule += f", labels agree on ≥ {agreement * 100:g}% of rows"
    if status == "passed":
        diffs = [units.finite(o.get("max_abs_diff")) for o in outputs]
        worst = max((x for x in diffs if x is not None), default=None)
        shown = f"; max |Δ| {units.number(worst, 3)}" if worst is not None else ""
        return [f"✅ parity on {rows}: every value within {rule}{shown}"]
    lines = [f"❌ **parity failed** on {rows}. Tolerance: {rule}.", ""]
    if outputs:
        lines += [
            "| | Output | Role | max abs Δ | max rel Δ | values outside | label agreement |",
            "|:-:|---|---|--:|--:|--:|--:|",
        ]
        for o in outputs:
            agree = units.finite(o.get("label_agreement"))
            lines.append(
                f"| {'✅' if o.get('passed') else '❌'} | {code(o.get('name'))} "
                f"| {cell(o.get('role') or '')} | {units.number(o.get('max_abs_diff'), 3)} "
                f"| {units.number(o.get('max_rel_diff'), 3)} "
                f"| {cell(o.get('mismatched_values', '–'))} "
                f"| {'–' if agree is None else f'{agree:.2%}'} |"
            )
            if o.get("problem"):
                lines.append(f"| | | {cell(o['problem'])} | | | | |")
        lines.append("")
    worst_rows = _entries(parity, "worst_rows")
    if worst_rows:
        lines += [
            "Worst rows:",
            "",
            "| Row | Output | Native | ONNX | abs Δ |",
            "|--:|---|---|---|--:|",
        ]
        for w in worst_rows[: d.max_items or 5]:
            lines.append(
                f"| {cell(w.get('where') or w.get('row'))} | {code(w.get('output'))} "
                f"| {_value(w.get('native'))} | {_value(w.get('onnx'))} "
                f"| {units.number(w.get('abs_diff'), 3)} |"
            )
        lines.append("")
    return lines


def _tests_md(r: ModelReport, d: _Detail) -> list[str]:
    if r.test is None:
        return []
    checks = _own_checks(r)
    if d.checks == "failing":
        checks = [c for c in checks if c.get("status") == "fail"]
    cases = [c for c in checks if c.get("kind") != "metric"]
    metrics = [c for c in checks if c.get("kind") == "metric"]
    out: list[str] = []
    limit = d.max_items
    if cases:
        out += ["#### Tests", "", "| | Check | Result |", "|:-:|---|---|"]
        for c in cases[:limit]:
            out.append(
                f"| {_ICON.get(str(c.get('status')), '·')} | {cell(c.get('kind'))} "
                f"{code(c.get('name'))} | {cell(c.get('detail', ''))} |"
            )
        if limit is not None and len(cases) > limit:
            out.append(f"| | … {len(cases) - limit} more | |")
        out.append("")
    if metrics:
        out += [
            "#### Metrics",
            "",
            "| | Metric | Value | Threshold | Rows |",
            "|:-:|---|--:|---|--:|",
        ]
        for c in metrics[:limit]:
            bounds = " and ".join(
                f"{op} {units.number(c[k])}" for k, op in (("min", "≥"), ("max", "≤")) if k in c
            )
            value = units.number(c.get("value")) if "value" in c else cell(c.get("detail", ""))
            rows = c.get("rows")
            out.append(
                f"| {_ICON.get(str(c.get('status')), '·')} | {code(c.get('name'))} | {value} "
                f"| {bounds} | {f'{rows:,}' if isinstance(rows, int) else ''} |"
            )
        if limit is not None and len(metrics) > limit:
            out.append(f"| | … {len(metrics) - limit} more | | | |")
        out.append("")
    if not out and d.checks == "all":
        out = ["#### Tests", "", "➖ no tests declared", ""]
    return out


def _metric_deltas(r: ModelReport) -> list[str]:
    """Each metric beside the serving version's value from its release.json."""
    base = r.baseline or {}
    serving = _entries(_mapping(_mapping(base.get("results")).get("test")), "checks")
    before = {str(c.get("name")): c.get("value") for c in serving if c.get("kind") == "metric"}
    lines = []
    for c in _entries(r.test, "checks"):
        if c.get("kind") != "metric":
            continue
        old, new = units.finite(before.get(str(c.get("name")))), units.finite(c.get("value"))
        if old is not None and new is not None:
            lines.append(
                f"- {code(c.get('name'))}: {new:.4g} (deployed {old:.4g}, {new - old:+.3g})"
            )
    if not lines:
        return []
    header = f"**Metrics against the deployed version {cell(base.get('version'))}**"
    return ["", header, "", *lines]


def _bench_md(r: ModelReport, d: _Detail) -> list[str]:
    doc = r.bench
    if doc is None:
        return []
    out: list[str] = ["#### Benchmark", ""]
    budgets = _entries(doc, "budgets")
    regressions = _entries(doc, "regression")
    measurements = _entries(doc, "measurements")
    shown = [m for m in measurements if m.get("engine") in ("onnx", "native")]
    if d.bench_table and shown:
        out += [
            "| Engine | Batch | p50 | p95 | p99 | Throughput |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for m in shown:
            out.append(
                f"| {_ENGINES.get(str(m.get('engine')), cell(m.get('engine')))} "
                f"| {cell(m.get('batch_size'))} | {units.microseconds(m.get('p50_ms'))} "
                f"| {units.microseconds(m.get('p95_ms'))} "
                f"| {units.microseconds(m.get('p99_ms'))} "
                f"| {units.rows_per_second(m.get('throughput'))} |"
            )
        out += ["", "<sub>Throughput: batch size ÷ mean latency of one call.</sub>", ""]
    for b in budgets:
        if d.checks == "failing" and b.get("passed"):
            continue
        out.append(f"- {'✅' if b.get('passed') else '❌'} budget: {budget_text(b)}")
    if regressions:
        out += ["", "**Against the deployed version**", ""]
        out += [f"- {regression_text(x, markdown=True)}" for x in regressions]
    elif doc.get("baseline") is None:
        reason = (r.baseline or {}).get("reason")
        out.append(f"- ➖ {cell(reason) if reason else 'no deployed version to compare with'}")
    out += _metric_deltas(r)
    for note in _list(doc.get("notes")):
        if str(note).startswith("regression not measured"):
            out.append(f"- ➖ {cell(note)}")
    if d.chart:
        for chart in (charts.speedup(measurements), charts.latency_beside_deployed(regressions)):
            if chart:
                out += ["", chart]
    machine = _mapping(doc.get("machine"))
    settings = _mapping(doc.get("settings"))
    if machine:
        out.append(
            f"\n<sub>{cell(machine.get('cpu', '?'))} · {cell(machine.get('usable_cores', '?'))} "
            f"cores usable · {cell(settings.get('intra_op_threads', '?'))} thread(s) · "
            f"onnxruntime {cell(machine.get('onnxruntime', '?'))}</sub>"
        )
    return [*out, ""]


#: The sections of a model's report, in order: each a function (ModelReport, _Detail) -> lines,
#: [] when it has nothing to say. A new one (e.g. metric deltas against the serving version's
#: release.json) is a function appended here; the document it reads is a file name added to
#: `results.STAGE_FILES` and a field of `ModelReport`, as test.json is `ModelReport.test`.
SECTIONS: list[Section] = [_validation_md, _convert_md, _tests_md, _bench_md]

_ENGINES = {"onnx": "ONNX", "native": "native", "baseline": "deployed"}


def budget_text(b: Mapping[str, Any]) -> str:
    """`batch 1 p99 180 µs (limit ≤ 1,000 µs)` or `batch 64 throughput 2.0 M rows/s (≥ …)`."""
    if b.get("metric") == "min_throughput":
        value, limit = units.rows_per_second(b.get("value")), units.rows_per_second(b.get("limit"))
        return f"batch {cell(b.get('batch_size'))} throughput {value} (limit ≥ {limit})"
    metric = str(b.get("metric", "")).removesuffix("_ms")
    value, limit = units.microseconds(b.get("value")), units.microseconds(b.get("limit"))
    return f"batch {cell(b.get('batch_size'))} {cell(metric)} {value} (limit ≤ {limit})"


def regression_text(x: Mapping[str, Any], *, markdown: bool = False) -> str:
    """One line on the interleaved comparison with the deployed version at one batch size."""
    verdict = str(x.get("verdict", ""))
    icon = {"regression": "❌", "faster": "✅", "ok": "✅"}.get(verdict, "·")
    allowed = units.finite(x.get("max_regression"))
    limit = f"; allowed ≤ {units.ratio(1 + allowed)}" if allowed is not None else ""
    shown = f"**{cell(verdict)}**" if markdown else verdict
    return (
        f"{icon} batch {cell(x.get('batch_size'))}: {shown}, p50 "
        f"{units.microseconds(x.get('candidate_p50_ms'))} vs "
        f"{units.microseconds(x.get('baseline_p50_ms'))} deployed: "
        f"{units.ratio(x.get('ratio'))} (95% CI {units.number(x.get('ci_low'), 3)}–"
        f"{units.number(x.get('ci_high'), 3)}{limit}; {cell(x.get('rounds'))} interleaved rounds)"
    )
