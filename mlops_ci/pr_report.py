"""The pull-request report: gathers each changed model's stage results (validate, convert, test,
bench JSON), renders one Markdown report, and keeps it as one sticky PR comment, summarised to
fit GitHub's comment limit; also the job summary and annotations.

Fork pull requests get a read-only token, so the comment cannot be written from their run: the
report is then saved as `pr-comment.json` (uploaded as an artifact by `actions/report`), and a
`workflow_run` job in the base repository posts it with `mlops-ci report --post-prepared`, never
checking out or running the fork's code, after checking that the pull request named in the file
really has the head commit the triggering run was for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_ci import atomic, gha
from mlops_ci.errors import CheckFailed, MlopsCiError, UsageError

#: Hidden marker that finds the sticky comment again on the next run.
MARKER = "<!-- mlops-ci:report -->"
#: GitHub rejects issue comments longer than this (characters).
COMMENT_LIMIT = 65_536
#: The job summary's limit is 1 MiB per step; stay well below it.
SUMMARY_LIMIT = 1_000_000
PREPARED_FILE = "pr-comment.json"
STAGE_FILES = ("validate.json", "convert.json", "test.json", "bench.json")
_ICON = {"pass": "✅", "fail": "❌", "skip": "➖", None: "·"}


# --- gathering the per-model reports ------------------------------------------------------------


@dataclass(frozen=True)
class ModelReport:
    """One model's stage results, as the stages wrote them (JSON documents; None: not run)."""

    model: str
    version: str
    manifest: str | None = None
    validate: Mapping[str, Any] | None = None
    convert: Mapping[str, Any] | None = None
    test: Mapping[str, Any] | None = None
    bench: Mapping[str, Any] | None = None
    unreadable: tuple[str, ...] = ()

    @classmethod
    def from_docs(
        cls,
        *,
        validate: Mapping[str, Any] | None = None,
        convert: Mapping[str, Any] | None = None,
        test: Mapping[str, Any] | None = None,
        bench: Mapping[str, Any] | None = None,
        fallback_name: str = "model",
        unreadable: Sequence[str] = (),
    ) -> ModelReport:
        """A report from stage documents (`TestResult.to_json()`, `BenchResult.to_json()`, …)."""
        docs = [d for d in (test, bench) if isinstance(d, Mapping)]
        if isinstance(convert, Mapping) and isinstance(convert.get("model"), Mapping):
            docs.append(convert["model"])  # convert.json nests {name, version, ...}
        name = next(
            (str(d.get("model") or d.get("name")) for d in docs if d.get("model") or d.get("name")),
            None,
        )
        version = next((str(d["version"]) for d in docs if d.get("version")), "")
        manifest = next((str(d["manifest"]) for d in docs if d.get("manifest")), None)
        entry = _validate_entry(validate)
        if entry is not None:
            manifest = manifest or entry.get("path")
        return cls(
            model=name or fallback_name,
            version=version,
            manifest=manifest,
            validate=validate,
            convert=convert,
            test=test,
            bench=bench,
            unreadable=tuple(unreadable),
        )

    def stages(self) -> dict[str, str | None]:
        """pass / fail / skip / None (not run) for each stage."""
        return {
            "validate": _validate_status(self.validate),
            "convert": _convert_status(self.convert),
            "test": _passed_status(self.test),
            "bench": _passed_status(self.bench),
        }

    @property
    def passed(self) -> bool:
        return not self.unreadable and "fail" not in self.stages().values()


def gather(folder: Path) -> list[ModelReport]:
    """Every model's report under `folder`: each folder holding a stage JSON is one model."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of stage reports")
    folders = sorted({p.parent for name in STAGE_FILES for p in folder.rglob(name)})
    reports = []
    for f in folders:
        docs: dict[str, Any] = {}
        unreadable = []
        for name in STAGE_FILES:
            path = f / name
            if not path.is_file():
                continue
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                unreadable.append(f"{name}: {exc}")
                continue
            if isinstance(doc, dict):
                docs[name.removesuffix(".json")] = doc
            else:
                unreadable.append(f"{name}: not a JSON object")
        reports.append(ModelReport.from_docs(**docs, fallback_name=f.name, unreadable=unreadable))
    return reports


def _validate_entry(doc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    # `mlops-ci validate --format json` writes {"manifests": [...]}; one manifest per model job
    if not isinstance(doc, Mapping):
        return None
    manifests = doc.get("manifests")
    if isinstance(manifests, list) and manifests and isinstance(manifests[0], Mapping):
        return manifests[0]
    return doc


def _validate_status(doc: Mapping[str, Any] | None) -> str | None:
    if doc is None:
        return None
    manifests = doc.get("manifests")
    if isinstance(manifests, list):
        return "pass" if all(m.get("valid") for m in manifests) else "fail"
    return "pass" if doc.get("valid", doc.get("passed")) else "fail"


def _convert_status(doc: Mapping[str, Any] | None) -> str | None:
    if doc is None:
        return None
    return "pass" if doc.get("passed") else "fail"


def _passed_status(doc: Mapping[str, Any] | None) -> str | None:
    if doc is None:
        return None
    return "pass" if doc.get("passed") else "fail"


# --- Markdown -----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell (manifest content is user input)."""
    text = str(value).replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _code(value: Any) -> str:
    return "`" + str(value).replace("`", "'").replace("\n", " ") + "`"


def _num(value: Any, digits: int = 4) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def _rows_per_s(value: Any) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value:,.0f}"


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
) -> str:
    """The Markdown report, starting with the sticky-comment marker.

    With `limit`, detail is dropped step by step (passing models first, then charts, then
    passing checks) until the text fits; as a last resort the table lists as many models as fit
    and says how many it left out. `details_url` (the workflow run) is linked when summarised.
    """
    ordered = sorted(reports, key=lambda r: (r.passed, r.model))
    for i, (label, detail_for) in enumerate(_LEVELS):
        note = None if i == 0 else label
        text = _document(ordered, detail_for, note=note, details_url=details_url)
        if limit is None or len(text) <= limit:
            return text

    # even the bare table is too long: list as many models as fit (failing ones come first)
    def table_of(keep: int) -> str:
        return _document(
            ordered[:keep],
            lambda r: None,
            note="the table only",
            details_url=details_url,
            left_out=len(ordered) - keep,
        )

    fits, too_many = 0, len(ordered)
    while too_many - fits > 1:  # binary search: table_of(fits) fits, table_of(too_many) not
        middle = (fits + too_many) // 2
        if len(table_of(middle)) <= (limit or 0):
            fits = middle
        else:
            too_many = middle
    return table_of(fits)


def _document(
    reports: Sequence[ModelReport],
    detail_for: Callable[[ModelReport], _Detail | None],
    *,
    note: str | None,
    details_url: str | None,
    left_out: int = 0,
) -> str:
    failing = sum(not r.passed for r in reports)
    total = len(reports) + left_out
    parts = [MARKER, "## mlops-ci report", ""]
    if failing:
        parts.append(
            f"**{total} model{'s' if total != 1 else ''} changed: ❌ {failing} failing, "
            f"✅ {len(reports) - failing} passing**"
        )
    else:
        parts.append(f"**{total} model{'s' if total != 1 else ''} changed: ✅ all passing**")
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
    if left_out:
        parts.append(
            f"\n… and {left_out} more model{'s' if left_out != 1 else ''} not listed here."
        )
    for r in reports:
        detail = detail_for(r)
        if detail is not None:
            parts.append(_model_section(r, detail))
    return "\n".join(parts).rstrip("\n") + "\n"


def _table(reports: Sequence[ModelReport]) -> str:
    rows = [
        "| Model | Version | Validate | Convert & parity | Tests | Bench | Regression |",
        "|---|---|:-:|:-:|:-:|:-:|:-:|",
    ]
    for r in reports:
        st = r.stages()
        rows.append(
            f"| {_code(r.model)} | {_cell(r.version)} | {_ICON[st['validate']]} "
            f"| {_ICON[st['convert']]} | {_tests_cell(r.test)} | {_bench_cell(r.bench)} "
            f"| {_regression_cell(r.bench)} |"
        )
    return "\n".join(rows)


def _tests_cell(doc: Mapping[str, Any] | None) -> str:
    if doc is None:
        return _ICON[None]
    counts = doc.get("counts") or {}
    failed, passed = counts.get("fail", 0), counts.get("pass", 0)
    if failed:
        return f"❌ {failed} failed"
    return f"✅ {passed}"


def _bench_cell(doc: Mapping[str, Any] | None) -> str:
    if doc is None:
        return _ICON[None]
    onnx = [m for m in doc.get("measurements", []) if m.get("engine") == "onnx"]
    first = min(onnx, key=lambda m: m.get("batch_size", 0), default=None)
    failed = [b for b in doc.get("budgets", []) if not b.get("passed")]
    icon = "❌" if failed else "✅"
    if first is None:
        return icon
    return f"{icon} p50 {_latency(first.get('p50_ms'))} @{first.get('batch_size')}"


def _latency(ms: Any) -> str:
    if not isinstance(ms, int | float) or not math.isfinite(ms):
        return "–"
    return f"{ms * 1e3:.3g} µs" if ms < 1 else f"{ms:.3g} ms"


def _regression_cell(doc: Mapping[str, Any] | None) -> str:
    regressions = (doc or {}).get("regression") or []
    if not regressions:
        return _ICON[None]
    worst = max(regressions, key=lambda r: r.get("ci_low", 0))
    icon = "❌" if any(not r.get("passed") for r in regressions) else "✅"
    ratio = worst.get("ratio")
    return f"{icon} ×{ratio:.3f}" if isinstance(ratio, int | float) else icon


def _model_section(r: ModelReport, d: _Detail) -> str:
    icon = "✅" if r.passed else "❌"
    opened = "" if r.passed else " open"
    out = [
        "",
        f"<details{opened}><summary><b>{icon} {_cell(r.model)} {_cell(r.version)}</b>"
        + (f" · {_code(r.manifest)}" if r.manifest else "")
        + "</summary>",
        "",
    ]
    for problem in r.unreadable:
        out.append(f"❌ unreadable report: {_cell(problem)}")
    out += _validation_md(r.validate, d)
    out += _convert_md(r.convert)
    out += _tests_md(r.test, d, parity_shown=r.convert is not None)
    out += _bench_md(r, d)
    out += ["", "</details>"]
    return "\n".join(out)


def _validation_md(doc: Mapping[str, Any] | None, d: _Detail) -> list[str]:
    if doc is None:
        return []
    status = _validate_status(doc)
    entry = _validate_entry(doc) or {}
    lines = ["#### Validation", ""]
    if status == "pass":
        return [*lines, "✅ manifest valid", ""]
    errors = list(entry.get("errors") or [])
    limit = d.max_items or len(errors)
    for e in errors[:limit]:
        where = f"line {e['line']}: " if e.get("line") else ""
        lines.append(f"- ❌ {where}{_cell(e.get('message', ''))}")
    if len(errors) > limit:
        lines.append(f"- … {len(errors) - limit} more")
    return [*lines, ""]


def _convert_md(doc: Mapping[str, Any] | None) -> list[str]:
    if doc is None:
        return []
    from mlops_ci.evaluate import parity_text

    lines = ["#### Conversion and parity", ""]
    onnx: Mapping[str, Any] = doc["onnx"] if isinstance(doc.get("onnx"), Mapping) else {}
    if doc.get("error"):
        lines.append(f"❌ {_cell(doc['error'])}")
    elif onnx:
        facts = [
            f"{label} {_cell(onnx[key])}"
            for key, label in (("converter", ""), ("opset", "opset"), ("checker", "checker"))
            if onnx.get(key) is not None
        ]
        icon = "✅" if onnx.get("checker") == "passed" else "❌"
        lines.append(f"{icon} converted: " + ", ".join(f.strip() for f in facts))
    signature: Mapping[str, Any] = (
        doc["signature"] if isinstance(doc.get("signature"), Mapping) else {}
    )
    for problem in signature.get("problems") or []:
        lines.append(f"- ❌ signature: {_cell(problem)}")
    parity = doc.get("parity")
    if isinstance(parity, Mapping):
        status = {"passed": "pass", "failed": "fail"}.get(str(parity.get("status")), "skip")
        lines.append(f"\n{_ICON[status]} parity: {_cell(parity_text(parity))}")
    return [*lines, ""]


def _tests_md(doc: Mapping[str, Any] | None, d: _Detail, *, parity_shown: bool) -> list[str]:
    if doc is None:
        return []
    checks = [c for c in doc.get("checks", []) if isinstance(c, Mapping)]
    if d.checks == "failing":
        checks = [c for c in checks if c.get("status") == "fail"]
    if parity_shown:  # the conversion section shows it already
        checks = [c for c in checks if c.get("kind") != "parity" or c.get("status") == "fail"]
    cases = [c for c in checks if c.get("kind") != "metric"]
    metrics = [c for c in checks if c.get("kind") == "metric"]
    out: list[str] = []
    limit = d.max_items
    if cases:
        out += ["#### Tests", "", "| | Check | Result |", "|:-:|---|---|"]
        for c in cases[:limit]:
            out.append(
                f"| {_ICON.get(c.get('status'), '·')} | {_cell(c.get('kind'))} "
                f"{_code(c.get('name'))} | {_cell(c.get('detail', ''))} |"
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
                f"{op} {_num(c[k])}" for k, op in (("min", "≥"), ("max", "≤")) if k in c
            )
            value = _num(c.get("value")) if "value" in c else _cell(c.get("detail", ""))
            out.append(
                f"| {_ICON.get(c.get('status'), '·')} | {_code(c.get('name'))} | {value} "
                f"| {bounds} | {c.get('rows', '')} |"
            )
        if limit is not None and len(metrics) > limit:
            out.append(f"| | … {len(metrics) - limit} more | | | |")
        out.append("")
    if not out and d.checks == "all":
        out = ["#### Tests", "", "➖ no tests declared", ""]
    return out


def _bench_md(r: ModelReport, d: _Detail) -> list[str]:
    doc = r.bench
    if doc is None:
        return []
    out: list[str] = ["#### Benchmark", ""]
    budgets = [b for b in doc.get("budgets", []) if isinstance(b, Mapping)]
    regressions = [x for x in doc.get("regression", []) if isinstance(x, Mapping)]
    measurements = [m for m in doc.get("measurements", []) if isinstance(m, Mapping)]
    if d.bench_table and measurements:
        out += [
            "| Engine | Batch | p50 ms | p95 ms | p99 ms | rows/s |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for m in measurements:
            out.append(
                f"| {_cell(m.get('engine'))} | {m.get('batch_size')} | {_num(m.get('p50_ms'))} "
                f"| {_num(m.get('p95_ms'))} | {_num(m.get('p99_ms'))} "
                f"| {_rows_per_s(m.get('throughput'))} |"
            )
        out.append("")
    for b in budgets:
        if d.checks == "failing" and b.get("passed"):
            continue
        op = "≥" if b.get("metric") == "min_throughput" else "≤"
        out.append(
            f"- {'✅' if b.get('passed') else '❌'} budget: batch {b.get('batch_size')} "
            f"{_cell(b.get('metric'))} {_num(b.get('value'))} (limit {op} {_num(b.get('limit'))})"
        )
    if regressions:
        out.append("")
        out.append("**Regression against the deployed version**")
        out.append("")
        for x in regressions:
            out.append(f"- {_regression_line(x)}")
    elif doc.get("baseline") is None:
        out.append("- ➖ regression: no deployed version to compare with")
    for note in doc.get("notes", []):
        if str(note).startswith("regression not measured"):
            out.append(f"- ➖ {_cell(note)}")
    if d.chart:
        chart = mermaid_chart(r.model, measurements)
        if chart:
            out += ["", chart]
    machine = doc.get("machine") or {}
    settings = doc.get("settings") or {}
    if machine:
        out.append(
            f"\n<sub>{_cell(machine.get('cpu', '?'))} · {machine.get('usable_cores', '?')} cores "
            f"usable · {settings.get('intra_op_threads', '?')} thread(s) · onnxruntime "
            f"{_cell(machine.get('onnxruntime', '?'))}</sub>"
        )
    return [*out, ""]


def _regression_line(x: Mapping[str, Any]) -> str:
    verdict = str(x.get("verdict", ""))
    icon = {"regression": "❌", "faster": "✅", "ok": "✅"}.get(verdict, "·")
    allowed = x.get("max_regression")
    limit = f"allowed ≤ ×{_num(1 + allowed, 3)}" if isinstance(allowed, int | float) else ""
    return (
        f"{icon} batch {x.get('batch_size')}: **{verdict}** — candidate/baseline "
        f"×{_num(x.get('ratio'), 3)} (95% CI {_num(x.get('ci_low'), 3)}–"
        f"{_num(x.get('ci_high'), 3)}; {limit}; {x.get('rounds')} interleaved rounds)"
    )


def mermaid_chart(model: str, measurements: Iterable[Mapping[str, Any]]) -> str | None:
    """A Mermaid `xychart-beta` bar chart of throughput: native, ONNX and baseline per batch.

    Throughput (rows/s at the median latency) rather than latency: the bars a reviewer compares,
    ONNX against the deployed baseline, are the tall ones, and a native model that is a
    thousand times slower does not flatten them to nothing on the linear axis.
    """
    bars: list[tuple[str, float]] = []
    order = {"native": 0, "onnx": 1, "baseline": 2}
    names = {"native": "native", "onnx": "ONNX", "baseline": "baseline"}
    ms = sorted(
        (m for m in measurements if m.get("engine") in order),
        key=lambda m: (m.get("batch_size", 0), order[str(m.get("engine"))]),
    )
    for m in ms:
        p50, size = m.get("p50_ms"), m.get("batch_size")
        if (
            isinstance(p50, int | float)
            and math.isfinite(p50)
            and p50 > 0
            and isinstance(size, int)
        ):
            bars.append((f"{names[str(m['engine'])]} ×{size}", size * 1000.0 / p50))
    if not bars:
        return None
    title = str(model).replace('"', "'")
    labels = ", ".join(f'"{label}"' for label, _ in bars)
    values = ", ".join(f"{v:.0f}" for _, v in bars)
    top = max(v for _, v in bars) * 1.1
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f'    title "{title}: throughput (rows/s at p50) by engine × batch size"',
            f"    x-axis [{labels}]",
            f'    y-axis "rows/s" 0 --> {top:.0f}',
            f"    bar [{values}]",
            "```",
        ]
    )


# --- the job summary, annotations, the comment --------------------------------------------------


def annotate(reports: Sequence[ModelReport]) -> None:
    """One error annotation per failing check, on the model's manifest."""
    for r in reports:
        title_prefix = f"{r.model} {r.version}".strip()
        for check in (r.test or {}).get("checks", []):
            if check.get("status") == "fail":
                gha.annotation(
                    "error",
                    f"{check.get('kind')} {check.get('name')}: {check.get('detail')}",
                    file=r.manifest,
                    title=f"{title_prefix}: test failed",
                )
        for b in (r.bench or {}).get("budgets", []):
            if not b.get("passed"):
                gha.annotation(
                    "error",
                    f"batch {b.get('batch_size')} {b.get('metric')} {_num(b.get('value'))} "
                    f"misses the budget {_num(b.get('limit'))}",
                    file=r.manifest,
                    title=f"{title_prefix}: benchmark budget",
                )
        for x in (r.bench or {}).get("regression", []):
            if not x.get("passed"):
                gha.annotation(
                    "error",
                    _regression_line(x).replace("**", ""),
                    file=r.manifest,
                    title=f"{title_prefix}: latency regression",
                )


def main(folder: Path, *, pr: int | None, post: bool, out: Path | None) -> int:
    """`mlops-ci report`: render, print, summarise, annotate and (with --post) upsert."""
    reports = gather(folder)
    if not reports:
        raise UsageError(f"no stage reports ({', '.join(STAGE_FILES)}) under {folder}")
    full = render(reports)
    print(full)
    if out is not None:
        atomic.write_text(out, full)
    gha.write_summary(render(reports, limit=SUMMARY_LIMIT))
    if gha.in_actions():  # workflow commands are noise in a terminal
        annotate(reports)
    if not post:
        return 0
    from mlops_ci import github

    pr = pr or github.event_pull_number()
    if pr is None:
        raise UsageError("--post needs the pull request: --pr N (or a pull_request event)")
    gh = github.GitHub.from_env()
    body = render(reports, limit=COMMENT_LIMIT, details_url=gh.run_url())
    try:
        comment_id, created = gh.upsert_comment(pr, MARKER, body)
    except MlopsCiError as exc:
        if not _cannot_write(exc):
            raise
        prepared = prepare(folder, pr, body, github.event_payload())
        print(
            f"mlops-ci report: the token cannot comment on #{pr} (a fork pull request?); "
            f"wrote {prepared} for a workflow_run job to post"
        )
        gha.annotation(
            "notice",
            f"The report could not be posted from this run; {PREPARED_FILE} holds it for the "
            "workflow_run job that posts reports of fork pull requests.",
            title="mlops-ci report",
        )
        return 0
    (folder / PREPARED_FILE).unlink(missing_ok=True)  # a stale one must never be posted later
    print(f"mlops-ci report: {'created' if created else 'updated'} comment {comment_id} on #{pr}")
    return 0


def _cannot_write(exc: MlopsCiError) -> bool:
    """A 403 from GitHub on writing: the fork pull request's read-only token."""
    cause = exc.__cause__
    return getattr(cause, "status", None) == 403


def prepare(folder: Path, pr: int, body: str, event: Mapping[str, Any]) -> Path:
    """Save the comment for a `workflow_run` job: `folder/pr-comment.json`."""
    head = ((event.get("pull_request") or {}).get("head") or {}).get("sha")
    doc = {"pr": pr, "head_sha": head, "marker": MARKER, "body": body}
    return atomic.write_json(folder / PREPARED_FILE, doc)


def post_prepared(path: Path) -> int:
    """Post a `pr-comment.json` from a fork's run; for a `workflow_run`-triggered job.

    The file came from a run of untrusted code, so nothing in it is believed without a check:
    the pull request it names must have, right now, the head commit of the run that triggered
    this job (`workflow_run.head_sha` of the event), the body is cut to the comment limit, and
    the comment is found and written by our own marker.
    """
    from mlops_ci import github

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the prepared comment: {exc}", path=path) from None
    pr, body = (doc.get("pr"), doc.get("body")) if isinstance(doc, dict) else (None, None)
    if not isinstance(pr, int) or isinstance(pr, bool) or pr <= 0 or not isinstance(body, str):
        raise CheckFailed("not a prepared comment (needs a pr number and a body)", path=path)
    run = github.event_payload().get("workflow_run")
    head_sha = run.get("head_sha") if isinstance(run, dict) else None
    if not head_sha:
        raise UsageError(
            "--post-prepared runs in a workflow_run job (no workflow_run in the event)"
        )
    gh = github.GitHub.from_env()
    actual = gh.pull_request(pr).head_sha
    if actual != head_sha:
        raise CheckFailed(
            f"refusing to post: pull request #{pr} is at {actual[:12]}, but the run that "
            f"produced the report was for {str(head_sha)[:12]}"
        )
    if MARKER not in body:
        body = f"{MARKER}\n{body}"
    if len(body) > COMMENT_LIMIT:
        body = body[: COMMENT_LIMIT - 80] + "\n\n… (cut to GitHub's comment limit)\n"
    comment_id, created = gh.upsert_comment(pr, MARKER, body)
    print(f"mlops-ci report: {'created' if created else 'updated'} comment {comment_id} on #{pr}")
    return 0
