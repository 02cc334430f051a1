"""What the person reading a workflow run sees besides the log: error annotations on the
manifest, at the failing line where there is one.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlops_ci import gha
from mlops_ci.manifest import Checked
from mlops_ci.report import markdown
from mlops_ci.report.markdown import budget_text, regression_text
from mlops_ci.report.results import ModelReport


def validation(results: Sequence[Checked]) -> None:
    for r in results:
        for p in r.problems:
            gha.annotation(
                "error",
                p.message,
                file=r.shown,
                line=p.line,
                col=p.column,
                title="mlops-ci validate",
            )


def models(reports: Sequence[ModelReport]) -> None:
    """One error annotation per failing check, on the model's manifest; a failing test case or
    metric points at its own line there."""
    for r in reports:
        title = f"{r.model} {r.version}".strip()
        for check in markdown._entries(r.test, "checks"):
            if check.get("status") != "fail":
                continue
            line = check.get("line")
            gha.annotation(
                "error",
                f"{check.get('kind')} {check.get('name')}: {check.get('detail')}",
                file=r.manifest,
                line=line if isinstance(line, int) and not isinstance(line, bool) else None,
                title=f"{title}: test failed",
            )
        for b in markdown._entries(r.bench, "budgets"):
            if not b.get("passed"):
                gha.annotation(
                    "error",
                    f"missed the budget: {budget_text(b)}",
                    file=r.manifest,
                    title=f"{title}: benchmark budget",
                )
        for x in markdown._entries(r.bench, "regression"):
            if not x.get("passed"):
                gha.annotation(
                    "error",
                    regression_text(x),
                    file=r.manifest,
                    title=f"{title}: latency regression",
                )
