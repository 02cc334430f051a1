"""One GitHub issue per model that needs attention: opened, edited in place, closed when healthy.

An issue is found again by its label and a hidden marker naming the model (the open labelled
issues are listed once a run, then matched per model), so a run never opens a second one; a
healthy model's open issue gets a comment and is closed as completed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlops_ci.github import GitHub
from mlops_ci.monitor import render
from mlops_ci.monitor.check import Verdict

LABEL = "mlops-ci/monitor"


def marker(model: str) -> str:
    return f"<!-- mlops-ci:monitor:{model} -->"


@dataclass(frozen=True)
class Action:
    model: str
    action: str  # "opened" | "updated" | "closed" | "left open" | "none"
    number: int | None = None
    url: str | None = None


def sync(gh: GitHub, verdicts: Sequence[Verdict], run_url: str | None = None) -> list[Action]:
    """Bring each model's issue in line with its verdict; raises MlopsCiError on API failure."""
    # One listing for the run, matched per model: listing once a model cost M × ⌈K/100⌉ requests.
    open_issues = gh.open_issues(LABEL) if verdicts else []
    actions = []
    for v in verdicts:
        mark = marker(v.name)
        found = next((i for i in open_issues if mark in i.body), None)
        if v.needs_attention:
            title, body = render.issue_title(v), render.issue_body(v, mark, run_url)
            if found is None:
                issue = gh.create_issue(title, body, [LABEL])
                actions.append(Action(v.name, "opened", issue.number, issue.html_url))
            else:
                gh.edit_issue(found.number, title=title, body=body)
                actions.append(Action(v.name, "updated", found.number, found.html_url))
        elif found is not None and v.unchecked:
            # No production rows to judge: "healthy again" would be a guess. Left open until a
            # run reads rows (a stopped log must not close its own alarm).
            actions.append(Action(v.name, "left open", found.number, found.html_url))
        elif found is not None:
            gh.close_issue(found.number, render.healthy_comment(v, run_url))
            actions.append(Action(v.name, "closed", found.number, found.html_url))
        else:
            actions.append(Action(v.name, "none"))
    return actions
