"""What the person reading a workflow run sees besides the log: error annotations on the
manifest, at the failing line where there is one.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlops_ci import gha
from mlops_ci.manifest import Checked
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
        for check in (r.test or {}).get("checks", []):
            if not isinstance(check, dict) or check.get("status") != "fail":
                continue
            line = check.get("line")
            gha.annotation(
                "error",
                f"{check.get('kind')} {check.get('name')}: {check.get('detail')}",
                file=r.manifest,
                line=line if isinstance(line, int) and not isinstance(line, bool) else None,
                title=f"{title}: test failed",
            )
        for b in (r.bench or {}).get("budgets", []):
            if isinstance(b, dict) and not b.get("passed"):
                gha.annotation(
                    "error",
                    f"missed the budget: {budget_text(b)}",
                    file=r.manifest,
                    title=f"{title}: benchmark budget",
                )
        for x in (r.bench or {}).get("regression", []):
            if isinstance(x, dict) and not x.get("passed"):
                gha.annotation(
                    "error",
                    regression_text(x),
                    file=r.manifest,
                    title=f"{title}: latency regression",
                )
