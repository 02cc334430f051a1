"""Plain text for a terminal or a runner's log: what `validate`, `convert`, `test` and `bench`
print, and the governance gate's verdict. Numbers in the units of `report.units`, as in the
Markdown report.

Lines printed by mlops-ci pass through `gha.guarded_output` too, so no text from a pull request
can become a workflow command; here, values are kept to one line with `escape.one_line`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from mlops_ci.manifest import Checked
from mlops_ci.report import units
from mlops_ci.report.escape import one_line
from mlops_ci.resources import MANIFEST_SCHEMA

if TYPE_CHECKING:
    from mlops_ci.bench import BenchResult
    from mlops_ci.convert import ConvertResult
    from mlops_ci.evaluate import TestResult
    from mlops_ci.policy import Decision


class Pull(Protocol):
    """What the gate's rendering needs of a pull request."""

    @property
    def number(self) -> int: ...
    @property
    def head_sha(self) -> str: ...
    @property
    def base_sha(self) -> str: ...


def validation(results: Sequence[Checked]) -> str:
    lines = []
    for r in results:
        if r.valid:
            lines.append(f"ok    {one_line(r.shown)}")
        else:
            lines.append(f"FAIL  {one_line(r.shown)}")
            lines.extend(f"  {one_line(p)}" for p in r.problems)
    bad = sum(not r.valid for r in results)
    problems = sum(len(r.problems) for r in results)
    # the approval policy is checked too, but it is not a manifest: "4 manifests and the policy"
    policies = sum(r.schema != MANIFEST_SCHEMA for r in results)
    checked = units.plural(len(results) - policies, "manifest")
    if policies:
        checked += " and the policy" if policies == 1 else f" and {policies} policies"
    if bad:
        lines.append(f"{bad} of {checked} invalid, {units.plural(problems, 'problem')}")
    else:
        lines.append(f"{checked} valid")
    return "\n".join(lines)


def tests(result: TestResult) -> str:
    """Every check, failing first, then a one-line verdict."""
    lines = [
        f"{c.status.upper():<5} {c.kind:<7} {one_line(c.name)}: {one_line(c.detail)}"
        for c in result.ordered()
    ]
    failed, total = len(result.failures), len(result.checks)
    verdict = "passed" if result.passed else f"FAILED ({failed} of {total} checks)"
    lines.append(f"{one_line(result.model)} {one_line(result.version)}: tests {verdict}")
    return "\n".join(lines)


def bench(result: BenchResult) -> str:
    """Failing budgets and regressions first, then the latency table."""
    lines = []
    for b in sorted(result.budgets, key=lambda b: b.passed):
        if b.metric == "min_throughput":
            shown = (
                f"throughput {units.rows_per_second(b.value)} "
                f"(limit ≥ {units.rows_per_second(b.limit)})"
            )
        else:
            shown = (
                f"{b.metric.removesuffix('_ms')} {units.microseconds(b.value)} "
                f"(limit ≤ {units.microseconds(b.limit)})"
            )
        lines.append(f"{'ok' if b.passed else 'FAIL':<5} budget  batch {b.batch_size} {shown}")
    for r in sorted(result.regressions, key=lambda r: r.passed):
        lines.append(
            f"{'ok' if r.passed else 'FAIL':<5} against the deployed version, batch "
            f"{r.batch_size}: {r.verdict}, p50 {units.microseconds(r.candidate_p50_ms)} vs "
            f"{units.microseconds(r.baseline_p50_ms)}: {units.ratio(r.ratio)} (95% CI "
            f"{r.low:.3f}–{r.high:.3f}, allowed ≤ {units.ratio(1 + r.allowed)}, "
            f"{r.rounds} rounds)"
        )
    lines.append(
        f"{'engine':<9} {'batch':>6} {'p50':>11} {'p95':>11} {'p99':>11} {'throughput':>16} "
        f"{'calls':>8}"
    )
    for m in result.measurements:
        lines.append(
            f"{m.engine:<9} {m.batch_size:>6} {units.microseconds(m.p50_ms):>11} "
            f"{units.microseconds(m.p95_ms):>11} {units.microseconds(m.p99_ms):>11} "
            f"{units.rows_per_second(m.throughput):>16} {m.iterations:>8}"
        )
    lines.append("throughput: batch size / mean latency of one call")
    cpu = one_line(result.machine.get("cpu", "?"))
    lines.append(
        f"machine: {cpu}, {result.machine.get('usable_cores')} usable cores; "
        f"threads {result.settings.get('intra_op_threads')}"
    )
    verdict = "passed" if result.passed else "FAILED"
    lines.append(f"{one_line(result.model)} {one_line(result.version)}: bench {verdict}")
    return "\n".join(lines)


def conversion(result: ConvertResult) -> str:
    """A few lines: the ONNX file, the checks, and parity per output with its worst rows."""
    name = f"{one_line(result.name)} {one_line(result.version)}"
    if result.error:
        what = "parity could not run" if result.onnx_path else "conversion failed"
        return f"{name}: {what}: {result.error}"
    parity = result.parity
    lines = [
        f"{name}: {'passed' if result.passed else 'FAILED'} -> {result.onnx_path}",
        f"  converter {result.converter}, opset {result.opset}, checker {result.checker}",
    ]
    lines += [f"  signature: {one_line(p)}" for p in result.signature_problems]
    if not result.passed:
        lines += [f"  note: {one_line(n)}" for n in result.notes]
    if parity is not None:
        lines.append(
            f"  parity {parity.status}"
            + (f" on {parity.rows} rows of {one_line(parity.data)}" if parity.rows else "")
            + (f": {one_line(parity.reason)}" if parity.reason else "")
        )
        if parity.status == "failed":
            lines.append(
                f"    tolerance: |native - ONNX| <= {parity.atol:g} + {parity.rtol:g} x |native|"
                f", labels agree on >= {parity.min_label_agreement:g} of rows"
            )
        for o in parity.outputs:
            agree = (
                "" if o.label_agreement is None else f", label agreement {o.label_agreement:.2%}"
            )
            lines.append(
                f"    {one_line(o.name)} ({o.role}): max abs {units.number(o.max_abs_diff, 3)}, "
                f"max rel {units.number(o.max_rel_diff, 3)}{agree}"
                + (f" -- {one_line(o.problem)}" if o.problem else "")
                + ("" if o.passed else "  FAILED")
            )
        for w in parity.worst_rows:
            lines.append(
                f"    worst {one_line(w.where)} {one_line(w.output)}: native {w.native} | "
                f"onnx {w.onnx}"
            )
    return "\n".join(lines)


def gate(decision: Decision, pull: Pull) -> str:
    """The gate's verdict: per model, who approved and what is still missing."""
    verdict = "APPROVED" if decision.approved else "NOT APPROVED"
    lines = [f"pull request #{pull.number} at {pull.head_sha[:12]}: {verdict}"]
    if not decision.outcomes:
        lines.append(f"  {one_line(decision.reason)}")
    for o in decision.outcomes:
        mark = "ok " if o.approved else "NO "
        who = ", ".join(f"@{a}" for a in o.approvers) or "nobody"
        lines.append(f"  {mark} {one_line(o.name)} (risk: {o.tier}) approved by {who}")
        lines += [f"       missing: {one_line(m)}" for m in o.missing]
        lines += [f"       note: {one_line(n)}" for n in o.notes]
    if decision.ignored:
        lines.append("  reviews not counted:")
        lines += [f"    - {one_line(i)}" for i in decision.ignored]
    lines.append(f"  policy: {one_line(decision.policy_source)} (as of base {pull.base_sha[:12]})")
    return "\n".join(lines)
